"""The pyreqwest backend of the proxy's upstream client (:mod:`.upstream`).

``TOKENKEEP_UPSTREAM_CLIENT=pyreqwest`` (``pip install 'tokenkeep[pyreqwest]'``): reqwest and
hyper in Rust, through pyreqwest. The same contract as the aiohttp backend: no redirects
followed, no decompression, no cookies, no proxy from the environment, a bounded connect
and each read bounded by ``TOKENKEEP_UPSTREAM_TIMEOUT_SECONDS`` (no total limit: a 100 MB
upload takes what it takes), ``TOKENKEEP_EGRESS_ADDRESS`` and ``TOKENKEEP_CA_BUNDLE``.

hyper never resends a request it has started to write (it retries only one whose pooled
connection was found closed before the first byte went out), so the resend rule of
:func:`tokenkeep.proxy.upstream.send` is the only one. reqwest reports "refused" and
"dropped after sending" with the same exception class; the cause chain tells them apart
(:func:`_never_sent`).

Limits (docs/ARCHITECTURE.md): hyper hands header values over as visible ASCII only, so an
answer with any other byte in a header value is refused with a 502 that says so; and hyper
does not expose a connection's local address, so :attr:`_Response.local_address` is the
pinned egress address or ``None``.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from pyreqwest import exceptions as reqwest_errors
from pyreqwest.client import Client, ClientBuilder

from tokenkeep.config import Settings
from tokenkeep.proxy.upstream import (
    UPSTREAM_POOL_LIMIT,
    UPSTREAM_POOL_LIMIT_PER_HOST,
    ConnectionDropped,
    RequestData,
    UpstreamCutError,
    UpstreamTimeoutError,
    UpstreamUnreachableError,
)

__all__ = ["ReqwestUpstream", "build_client"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)
# reqwest's cause chain for a connection it could not open (nothing was sent).
_CONNECT_CAUSE = "client error (Connect)"


def build_client(settings: Settings, *, pool_limit: int = UPSTREAM_POOL_LIMIT) -> Client:
    """The one client of a process (see the module docstring for what it is set to)."""
    builder = (
        ClientBuilder()
        .follow_redirects(False)  # a redirect must never carry our token elsewhere
        .http1_only()
        .no_proxy()
        .gzip(False)
        .brotli(False)
        .zstd(False)
        .deflate(False)
        .default_cookie_store(False)
        .connect_timeout(timedelta(seconds=settings.upstream_connect_timeout_seconds))
        .read_timeout(timedelta(seconds=settings.upstream_timeout_seconds))
        .pool_idle_timeout(timedelta(seconds=30))
        .max_connections(pool_limit)
        .tcp_nodelay(True)
    )
    if settings.egress_address:
        builder = builder.local_address(settings.egress_address)
    if settings.ca_bundle is not None:
        for pem in _PEM_CERTIFICATE.findall(settings.ca_bundle.read_bytes()):
            builder = builder.add_root_certificate_pem(pem)
    return builder.build()


def _causes(exc: reqwest_errors.PyreqwestError) -> list[str]:
    details: Any = getattr(exc, "details", None) or {}
    return [str(cause.get("message", "")) for cause in details.get("causes") or ()]


def _never_sent(exc: reqwest_errors.PyreqwestError) -> bool:
    """A connect that failed (refused, DNS, TLS handshake): the request never went out."""
    return isinstance(exc, reqwest_errors.ConnectError) and _CONNECT_CAUSE in _causes(exc)


def _reason(exc: reqwest_errors.PyreqwestError) -> str:
    causes = _causes(exc)
    return f"{type(exc).__name__}: {causes[-1]}" if causes else type(exc).__name__


class _Response:
    """A streamed pyreqwest response as :class:`~tokenkeep.proxy.upstream.UpstreamResponse`."""

    __slots__ = ("_context", "_reader", "_slot", "local_address", "raw_headers", "status")

    def __init__(
        self,
        context: Any,
        status: int,
        raw_headers: list[tuple[bytes, bytes]],
        reader: Any,
        *,
        local_address: str | None,
        slot: asyncio.Semaphore,
    ) -> None:
        self._context = context
        self._slot = slot
        self._reader = reader
        self.status = status
        self.raw_headers = raw_headers
        self.local_address = local_address

    async def read_chunk(self) -> bytes:
        try:
            chunk = await self._reader.read_chunk()
        except reqwest_errors.PyreqwestError as exc:
            raise UpstreamCutError(_reason(exc)) from None
        return b"" if chunk is None else bytes(chunk)

    async def aclose(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            try:
                await context.__aexit__(None, None, None)
            finally:
                self._slot.release()


class ReqwestUpstream:
    """The pyreqwest backend (see the module docstring).

    reqwest caps requests in flight only in all (``pool_limit``); the per-host cap that keeps
    one org's storm in its own queue (``UPSTREAM_POOL_LIMIT_PER_HOST``, :mod:`.upstream`) is
    a semaphore per host here, held from the request until the response is closed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        pool_limit: int = UPSTREAM_POOL_LIMIT,
        pool_limit_per_host: int = UPSTREAM_POOL_LIMIT_PER_HOST,
    ) -> None:
        self.client = build_client(settings, pool_limit=pool_limit)
        self._local_address = settings.egress_address
        self.pool_limit_per_host = pool_limit_per_host
        self._hosts: dict[str, asyncio.Semaphore] = {}

    def _slot(self, url: str) -> asyncio.Semaphore:
        host = url.split("/", 3)[2]  # scheme://host[:port]/...: built by proxy/paths.py
        slot = self._hosts.get(host)
        if slot is None:
            slot = self._hosts[host] = asyncio.Semaphore(self.pool_limit_per_host or 1 << 30)
        return slot

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]], data: RequestData
    ) -> _Response:
        slot = self._slot(url)
        await slot.acquire()
        try:
            return await self._send(method, url, headers, data, slot)
        except BaseException:
            slot.release()
            raise

    async def _send(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        data: RequestData,
        slot: asyncio.Semaphore,
    ) -> _Response:
        builder = self.client.request(method, url).headers(headers)
        if isinstance(data, bytes):
            builder = builder.body_bytes(data)
        elif data is not None:
            builder = builder.body_stream(data)
        context = builder.build_streamed()
        try:
            response = await context.__aenter__()
        except reqwest_errors.RequestTimeoutError:
            raise UpstreamTimeoutError("Salesforce did not answer in time.") from None
        except reqwest_errors.PyreqwestError as exc:
            if _never_sent(exc) or not isinstance(exc, reqwest_errors.NetworkError):
                raise UpstreamUnreachableError(
                    f"Salesforce could not be reached ({_reason(exc)})."
                ) from None
            raise ConnectionDropped(_reason(exc)) from None
        try:
            raw_headers = [
                (key.encode("latin-1"), value.encode("latin-1"))
                for key, value in response.headers.items()
            ]
        except ValueError:  # a header value that is not visible ASCII (module docstring)
            await context.__aexit__(None, None, None)
            raise UpstreamUnreachableError(
                "Salesforce's answer has a header value that is not ASCII, which the "
                "pyreqwest upstream client cannot relay (TOKENKEEP_UPSTREAM_CLIENT=aiohttp can)."
            ) from None
        return _Response(
            context,
            response.status,
            raw_headers,
            response.body_reader,
            local_address=self._local_address,
            slot=slot,
        )

    async def aclose(self) -> None:
        await self.client.close()
