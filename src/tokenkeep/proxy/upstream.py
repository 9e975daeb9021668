"""The one shared aiohttp session the proxy sends every upstream call through.

Keep-alive pool per host, DNS cache, timeouts from settings, optional pinned egress address
(``TOKENKEEP_EGRESS_ADDRESS``: the fix for orgs that lock sessions to an IP), TLS verified
against the system CAs plus ``TOKENKEEP_CA_BUNDLE`` (e.g. the emulator's ``--tls`` CA).
Bodies are relayed byte for byte: no automatic decompression. ``Accept-Encoding`` is always
set by :mod:`.headers` (``identity`` when the client sent none), so aiohttp never asks for
gzip on a client's behalf; it no longer needs ``skip_auto_headers``, whose per-request
cost showed in profiles.
"""

from __future__ import annotations

import ssl
from typing import ClassVar

import aiohttp

from tokenkeep.config import Settings
from tokenkeep.errors import TransientUpstreamError

__all__ = [
    "UpstreamTimeoutError",
    "UpstreamUnreachableError",
    "create_upstream_session",
    "peek_body",
    "upstream_ssl_context",
    "upstream_timeout",
]


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
    pool_limit: int = 512,
    pool_limit_per_host: int = 0,
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
    return aiohttp.ClientSession(
        connector=connector,
        timeout=upstream_timeout(settings),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # never keep one org's cookies for another
        raise_for_status=False,
    )


class UpstreamUnreachableError(TransientUpstreamError):
    """Salesforce could not be reached (connection refused, reset, DNS, TLS)."""

    code: ClassVar[str] = "upstream_unreachable"
    status_code: ClassVar[int] = 502


class UpstreamTimeoutError(TransientUpstreamError):
    """Salesforce did not answer in time."""

    code: ClassVar[str] = "upstream_timeout"
    status_code: ClassVar[int] = 504


async def peek_body(content: aiohttp.StreamReader, limit: int) -> bytes:
    """Up to ``limit`` bytes from the start of a body (all of it if shorter)."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)
