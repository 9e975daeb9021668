"""(c) The floor of what a Python proxy costs: a raw ASGI app and one aiohttp session.

No auth, no checks, no logging. Run it as the benchmark does::

    BENCH_UPSTREAM=http://127.0.0.1:8081 python -m uvicorn --app-dir bench minimal_proxy:app \
        --loop uvloop --http httptools --no-access-log --no-server-header --no-date-header
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8081")
_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})
_session: list[aiohttp.ClientSession] = []  # one shared session, made inside the loop


async def read_request(scope: dict[str, Any], receive: Any) -> tuple[str, bytes]:
    """The upstream URL (``UPSTREAM`` + the same path and query) and the whole request body
    (small here; a real proxy would stream it)."""
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    query = scope["query_string"].decode()
    return UPSTREAM + scope["path"] + ("?" + query if query else ""), body


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Forward the request to ``UPSTREAM`` + the same path; relay status, headers, body."""
    if scope["type"] != "http":
        return
    if not _session:
        _session.append(aiohttp.ClientSession(auto_decompress=False))
    url, body = await read_request(scope, receive)
    async with _session[0].request(scope["method"], url, data=body or None) as resp:
        headers = [(k, v) for k, v in resp.raw_headers if k.lower() not in _HOP]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        async for chunk in resp.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
