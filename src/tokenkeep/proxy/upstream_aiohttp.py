"""The aiohttp backend of the proxy's upstream client (:mod:`.upstream`), the default.

One shared session: keep-alive pool per host, DNS cache, timeouts from settings, optional
pinned egress address (``TOKENKEEP_EGRESS_ADDRESS``: the fix for orgs that lock sessions to
an IP), TLS verified against the system CAs plus ``TOKENKEEP_CA_BUNDLE`` (e.g. the
emulator's ``--tls`` CA). Bodies are relayed byte for byte: no automatic decompression.
``Accept-Encoding`` is always set by :mod:`.headers` (``identity`` when the client sent
none), so aiohttp never asks for gzip on a client's behalf; it no longer needs
``skip_auto_headers``, whose per-request cost showed in profiles.

No transport resends: aiohttp sends a request again, once, when the connection drops
before the answer (``aiohttp/client.py``: ``retry_persistent_connection``, for its
``IDEMPOTENT_METHODS``, which include PUT and DELETE). Upstream, that doubled every call to
a server that cuts connections, and could apply a Salesforce PUT or DELETE twice. The only
switch is private (``ClientSession._retry_connection``; aiohttp's own test client sets it),
so :func:`disable_transport_resends` sets it behind a feature check, and
``tests/reliability/test_upstream_retries.py`` fails if an aiohttp upgrade changes it. The
proxy then decides itself (:func:`tokenkeep.proxy.retry.resend_after_drop`): a read is sent
again at most once, a write never.
"""

from __future__ import annotations

import ssl
import warnings

import aiohttp
import yarl

from tokenkeep.config import Settings
from tokenkeep.oauth.session import local_address_of
from tokenkeep.observability.logging import get_logger
from tokenkeep.proxy.upstream import (
    UPSTREAM_POOL_LIMIT,
    UPSTREAM_POOL_LIMIT_PER_HOST,
    ConnectionDropped,
    RequestData,
    UpstreamCutError,
    UpstreamTimeoutError,
    UpstreamUnreachableError,
)

__all__ = [
    "AiohttpUpstream",
    "create_upstream_session",
    "disable_transport_resends",
    "is_connection_drop",
    "transport_resends_disabled",
    "upstream_ssl_context",
    "upstream_timeout",
]

_log = get_logger("tokenkeep.proxy")
# aiohttp 3.x: read once per request, before the first attempt (see the module docstring).
_RESEND_SWITCH = "_retry_connection"


def upstream_ssl_context(settings: Settings) -> ssl.SSLContext:
    """System CAs, plus the extra bundle when one is configured."""
    context = ssl.create_default_context()
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    return context


def upstream_timeout(settings: Settings) -> aiohttp.ClientTimeout:
    """No total limit (a 100 MB upload takes what it takes); bounded connect and each read."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=settings.upstream_connect_timeout_seconds,
        sock_connect=settings.upstream_connect_timeout_seconds,
        sock_read=settings.upstream_timeout_seconds,
    )


def create_upstream_session(
    settings: Settings,
    *,
    pool_limit: int = UPSTREAM_POOL_LIMIT,
    pool_limit_per_host: int = UPSTREAM_POOL_LIMIT_PER_HOST,
    dns_cache_seconds: int = 300,
    keepalive_seconds: float = 30.0,
) -> aiohttp.ClientSession:
    """A new session; call inside the running event loop and close it on shutdown."""
    local_addr = (settings.egress_address, 0) if settings.egress_address else None
    connector = aiohttp.TCPConnector(
        limit=pool_limit,
        limit_per_host=pool_limit_per_host,
        ttl_dns_cache=dns_cache_seconds,
        keepalive_timeout=keepalive_seconds,
        local_addr=local_addr,
        ssl=upstream_ssl_context(settings),
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=upstream_timeout(settings),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # never keep one org's cookies for another
        raise_for_status=False,
    )
    disable_transport_resends(session)
    return session


def disable_transport_resends(session: aiohttp.ClientSession) -> bool:
    """Turn aiohttp's own resend-once off for ``session``; False (and a warning) when this
    aiohttp has no such switch any more: then check its changelog before trusting it."""
    if _RESEND_SWITCH not in getattr(aiohttp.ClientSession, "ATTRS", ()):
        _log.warning("upstream.resend_switch_missing", aiohttp=aiohttp.__version__)
        return False
    with warnings.catch_warnings():  # a listed attribute: no "custom attribute" warning
        warnings.simplefilter("ignore", DeprecationWarning)
        setattr(session, _RESEND_SWITCH, False)
    return True


def transport_resends_disabled(session: aiohttp.ClientSession) -> bool:
    """True when aiohttp will not resend this session's requests on its own."""
    return getattr(session, _RESEND_SWITCH, True) is False


def is_connection_drop(exc: BaseException) -> bool:
    """The connection was cut after the request (or part of it) went out, before an answer:
    the server may have acted on it. A refused or failed connect is not one (nothing was
    sent), nor is a timeout (the proxy's 504)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return False
    return isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)


class _Response:
    """An aiohttp response as :class:`~tokenkeep.proxy.upstream.UpstreamResponse`."""

    __slots__ = ("_content", "_response", "raw_headers", "status")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._content = response.content
        self.status = response.status
        self.raw_headers = response.raw_headers

    @property
    def local_address(self) -> str | None:
        return local_address_of(self._response)

    async def read_chunk(self) -> bytes:
        try:
            return await self._content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamCutError(repr(exc)) from None

    async def aclose(self) -> None:
        self._response.release()


class AiohttpUpstream:
    """The default backend (see the module docstring). ``session`` is for tests that need
    their own; it gets the same no-resend switch."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool_limit: int = UPSTREAM_POOL_LIMIT,
        pool_limit_per_host: int = UPSTREAM_POOL_LIMIT_PER_HOST,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if session is not None:
            disable_transport_resends(session)
        self.session = session or create_upstream_session(
            settings, pool_limit=pool_limit, pool_limit_per_host=pool_limit_per_host
        )

    async def request(
        self, method: str, url: str, headers: list[tuple[str, str]], data: RequestData
    ) -> _Response:
        try:
            response = await self.session.request(
                method,
                yarl.URL(url, encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,  # a redirect must never carry our token elsewhere
            )
        except TimeoutError:
            raise UpstreamTimeoutError("Salesforce did not answer in time.") from None
        except aiohttp.ClientError as exc:
            if is_connection_drop(exc):
                raise ConnectionDropped(type(exc).__name__) from None
            raise UpstreamUnreachableError(
                f"Salesforce could not be reached ({type(exc).__name__})."
            ) from None
        return _Response(response)

    async def aclose(self) -> None:
        await self.session.close()
