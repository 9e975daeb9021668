"""(c') The minimal proxy of ``minimal_proxy.py`` on granian's RSGI interface.

The same forwarding (one aiohttp session, no auth, no checks, no logging), written against
RSGI (granian's native interface: no ASGI message dicts) instead of ASGI. Run::

    BENCH_UPSTREAM=http://127.0.0.1:8081 granian --interface rsgi --loop uvloop \
        --app-dir bench minimal_proxy_rsgi:app
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8081")
_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})
_session: list[aiohttp.ClientSession] = []  # one shared session, made inside the loop


async def app(scope: Any, protocol: Any) -> None:
    """Forward the request to ``UPSTREAM`` + the same path; relay status, headers, body."""
    if scope.proto != "http":
        return
    if not _session:
        _session.append(aiohttp.ClientSession(auto_decompress=False))
    body = await protocol()  # the request body (small here)
    query = scope.query_string
    url = UPSTREAM + scope.path + ("?" + query if query else "")
    async with _session[0].request(scope.method, url, data=body or None) as resp:
        headers = [(k, v) for k, v in resp.headers.items() if k.lower() not in _HOP]
        transport = protocol.response_stream(resp.status, headers)
        async for chunk in resp.content.iter_any():
            await transport.send_bytes(chunk)
