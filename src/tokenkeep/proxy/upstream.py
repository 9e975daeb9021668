"""The proxy's upstream client: what every backend offers, and the resend rule on top.

The proxy talks to Salesforce through one :class:`Upstream` per process, made by
:func:`create_upstream` from ``TOKENKEEP_UPSTREAM_CLIENT``:

* ``aiohttp`` (the default, :mod:`.upstream_aiohttp`): pure asyncio; relays any header
  byte for byte and knows the local address every call left from.
* ``pyreqwest`` (:mod:`.upstream_reqwest`, ``pip install 'tokenkeep[pyreqwest]'``): Rust's
  reqwest/hyper: ≈ 15 % less CPU for the minimal proxy in ``bench/proxy.py``, but more
  for tokenkeep with its operation log on (docs/PERFORMANCE.md), hence not the default.
  Two limits, both documented in docs/ARCHITECTURE.md: a response header value that is
  not visible ASCII cannot be read (the call answers 502 ``upstream_unreachable`` naming
  it), and the local address of a call is known only with ``TOKENKEEP_EGRESS_ADDRESS``
  pinned (else the IP-lock diagnosis relies on its own probe's address).

A backend sends one request and says what happened: a response, a timeout (504), "could
not connect" (502, nothing was sent) or "the connection dropped after sending"
(:class:`ConnectionDropped`). Whether a dropped request goes out again is decided here,
once, for both: :func:`~tokenkeep.proxy.retry.resend_after_drop` (a read at most once, a
write never: it may have been applied). Neither backend resends on its own: aiohttp's
switch is turned off (:mod:`.upstream_aiohttp`), hyper only retries a request it never
started to write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import ClassVar, Protocol

from tokenkeep.config import Settings
from tokenkeep.errors import ConfigError, TransientUpstreamError
from tokenkeep.proxy.retry import is_write, resend_after_drop

__all__ = [
    "UPSTREAM_POOL_LIMIT",
    "UPSTREAM_POOL_LIMIT_PER_HOST",
    "ConnectionDropped",
    "RequestData",
    "Upstream",
    "UpstreamCutError",
    "UpstreamFailure",
    "UpstreamResponse",
    "UpstreamTimeoutError",
    "UpstreamUnreachableError",
    "create_upstream",
    "has_header",
    "peek_body",
    "send",
]

#: Upstream connections at most, in all and per Salesforce host (an org's My Domain or
#: instance host). The per-host cap keeps one org's storm (thousands of calls held by a slow
#: or limited org) in that org's own queue: with only a total cap of 512, an org holding 512
#: calls made every other org's calls wait behind it (measured 21 s, tests/reliability/
#: test_upstream_storms.py). Salesforce itself allows an org 25 long-running calls at once.
UPSTREAM_POOL_LIMIT = 4096
UPSTREAM_POOL_LIMIT_PER_HOST = 256

RequestData = bytes | AsyncIterator[bytes] | None


class UpstreamUnreachableError(TransientUpstreamError):
    """Salesforce could not be reached (connection refused, reset, DNS, TLS)."""

    code: ClassVar[str] = "upstream_unreachable"
    status_code: ClassVar[int] = 502


class UpstreamTimeoutError(TransientUpstreamError):
    """Salesforce did not answer in time."""

    code: ClassVar[str] = "upstream_timeout"
    status_code: ClassVar[int] = 504


class UpstreamFailure(Exception):
    """A backend's transport failure, for :func:`send` and the relay; ``reason`` names the
    backend's error (no URL, no header: it is logged)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionDropped(UpstreamFailure):
    """The connection was cut after the request (or part of it) went out, before an
    answer: the server may have acted on it."""


class UpstreamCutError(UpstreamFailure):
    """The answer's body stopped short (reset, timeout mid-body)."""


class UpstreamResponse(Protocol):
    """One upstream answer, its body not read yet."""

    @property
    def status(self) -> int: ...

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    @property
    def local_address(self) -> str | None:
        """The local IP the request left from, when the backend knows it."""

    async def read_chunk(self) -> bytes:
        """The next piece of the body, ``b""`` at its end; :class:`UpstreamCutError` when
        the body stops short."""

    async def aclose(self) -> None:
        """Give the connection back (or drop it); safe to call twice."""


class Upstream(Protocol):
    """One backend: a connection pool for every upstream host."""

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]], data: RequestData
    ) -> UpstreamResponse:
        """Send once. Raises :class:`UpstreamTimeoutError`, :class:`UpstreamUnreachableError`
        (nothing was sent) or :class:`ConnectionDropped`."""

    async def aclose(self) -> None: ...


def create_upstream(
    settings: Settings,
    *,
    pool_limit: int = UPSTREAM_POOL_LIMIT,
    pool_limit_per_host: int = UPSTREAM_POOL_LIMIT_PER_HOST,
) -> Upstream:
    """The backend ``settings.upstream_client`` names; call inside the running loop."""
    if settings.upstream_client == "pyreqwest":
        try:
            from tokenkeep.proxy.upstream_reqwest import ReqwestUpstream
        except ImportError as exc:  # the optional dependency is missing
            raise ConfigError(
                "TOKENKEEP_UPSTREAM_CLIENT=pyreqwest needs the pyreqwest package: "
                "pip install 'tokenkeep[pyreqwest]'."
            ) from exc
        return ReqwestUpstream(
            settings, pool_limit=pool_limit, pool_limit_per_host=pool_limit_per_host
        )
    from tokenkeep.proxy.upstream_aiohttp import AiohttpUpstream

    return AiohttpUpstream(settings, pool_limit=pool_limit, pool_limit_per_host=pool_limit_per_host)


async def send(
    upstream: Upstream,
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]],
    data: RequestData,
    replayable: bool,
) -> UpstreamResponse:
    """Send one proxied request; a dropped connection resends it only when
    :func:`~tokenkeep.proxy.retry.resend_after_drop` says so (a read, once). Raises
    :class:`UpstreamTimeoutError` (504) or :class:`UpstreamUnreachableError` (502)."""
    resent = False
    while True:
        try:
            return await upstream.request(method, url, headers, data)
        except ConnectionDropped as exc:
            if resend_after_drop(method, replayable=replayable, resent=resent):
                resent = True
                continue
            if is_write(method):
                raise UpstreamUnreachableError(
                    f"Salesforce closed the connection before answering ({exc.reason}): the "
                    "write may have been applied, so tokenkeep did not send it again."
                ) from None
            raise UpstreamUnreachableError(
                f"Salesforce could not be reached ({exc.reason})."
            ) from None


async def peek_body(response: UpstreamResponse, limit: int) -> bytes:
    """At least ``limit`` bytes from the start of a body (all of it if shorter; a little
    more when the last piece ran past it: nothing is lost, the relay sends it first)."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit:
            chunk = await response.read_chunk()
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
    except UpstreamCutError:  # the caller closes the response
        raise UpstreamUnreachableError("Salesforce's answer was cut short.") from None
    return b"".join(parts)


def has_header(raw_headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bool:
    """Whether a header named ``name`` (lower case) is among ``raw_headers``."""
    return any(key.lower() == name for key, _ in raw_headers)
