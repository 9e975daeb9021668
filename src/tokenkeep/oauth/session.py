"""The aiohttp session tokenkeep's upstream calls share, and where a response left from.

:func:`create_session` builds the one pooled session of a process: pinned to
``TOKENKEEP_EGRESS_ADDRESS`` when set, trusting ``TOKENKEEP_CA_BUNDLE`` when set, with the
upstream timeouts and no cookie jar. :func:`local_address_of` reads the local IP a
response's connection left from (a token's ``issued_to_address``, the address diagnosis
compares). Both are re-exported by :mod:`tokenkeep.oauth.client`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

__all__ = ["create_session", "local_address_of"]


def create_session(
    *,
    egress_address: str | None = None,
    ca_bundle: Path | None = None,
    timeout_seconds: float = 30.0,
    connect_timeout_seconds: float = 10.0,
) -> aiohttp.ClientSession:
    """An aiohttp session suited to the token endpoint.

    ``egress_address`` pins outgoing connections to one local address
    (``TOKENKEEP_EGRESS_ADDRESS``: the fix for orgs that lock sessions to the IP they were
    issued to). ``ca_bundle`` adds a private CA (``TOKENKEEP_CA_BUNDLE``).
    Call it inside a running event loop; the caller closes the session.
    """
    ssl_ctx: ssl.SSLContext | bool = True
    if ca_bundle is not None:
        ssl_ctx = ssl.create_default_context(cafile=str(ca_bundle))
    connector = aiohttp.TCPConnector(
        local_addr=(egress_address, 0) if egress_address else None,
        ssl=ssl_ctx,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_seconds, connect=connect_timeout_seconds),
        # Cookies from the provider have no business in a token client shared by all orgs.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def local_address_of(resp: aiohttp.ClientResponse) -> str | None:
    """The local IP the request left from (recorded as a token's ``issued_to_address``)."""
    conn = resp.connection
    transport = conn.transport if conn is not None else None
    if transport is None:
        # A small body is often read with the headers, and the connection is released to the
        # pool before we look. aiohttp keeps the protocol on the response (private attribute,
        # stable since 3.8); if it changes we lose only this best-effort detail (None).
        protocol = getattr(resp, "_protocol", None)
        transport = getattr(protocol, "transport", None)
    if transport is None:
        return None
    sockname = transport.get_extra_info("sockname")
    if isinstance(sockname, tuple) and sockname:
        return str(sockname[0])
    return None
