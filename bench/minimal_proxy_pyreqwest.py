"""(c4) The minimal proxy of ``minimal_proxy.py`` with pyreqwest (Rust reqwest/hyper) as the
upstream client instead of aiohttp; the same raw ASGI app under the same uvicorn.

No auth, no checks, no logging: a candidate's floor, measured beside (c). Run::

    BENCH_UPSTREAM=http://127.0.0.1:8081 python -m uvicorn --app-dir bench \
        minimal_proxy_pyreqwest:app --loop uvloop --http httptools --no-access-log
"""

from __future__ import annotations

from typing import Any

from minimal_proxy import read_request
from pyreqwest.client import Client, ClientBuilder

_HOP = frozenset({"connection", "keep-alive", "transfer-encoding"})
_client: list[Client] = []  # one shared client, made inside the loop


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Forward the request to ``UPSTREAM`` + the same path; relay status, headers, body."""
    if scope["type"] != "http":
        return
    if not _client:
        _client.append(ClientBuilder().follow_redirects(False).http1_only().build())
    url, body = await read_request(scope, receive)
    builder = _client[0].request(scope["method"], url)
    if body:
        builder = builder.body_bytes(body)
    async with builder.build_streamed() as resp:
        headers = [
            (k.encode(), v.encode()) for k, v in resp.headers.items() if k.lower() not in _HOP
        ]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        reader = resp.body_reader
        while (chunk := await reader.read_chunk()) is not None:
            await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
