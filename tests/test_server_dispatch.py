"""The top-level ASGI app: proxy paths to the proxy, the rest to FastAPI; lifespan → gateway."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from tokenkeep.api import create_app
from tokenkeep.config import load_settings
from tokenkeep.errors import ConfigError
from tokenkeep.runtime import Gateway
from tokenkeep.server import GatewayApp, ServerHandle, build_asgi_app, check_port_free, free_port


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    for name in list(os.environ):
        if name.startswith("TOKENKEEP_"):
            monkeypatch.delenv(name)
    return Gateway(
        load_settings(data_dir=tmp_path / "data", secret_key="tk_test-key-0123456789abcdef")
    )


class FakeProxy:
    """Stands in for the proxy app: answers with the path it saw."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.seen: list[tuple[str, str]] = []  # (scheme, client host) of each request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        self.seen.append((scope["scheme"], scope["client"][0]))
        body = f"proxy saw {scope['path']}".encode()
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def test_proxy_paths_go_to_the_proxy_and_the_rest_to_the_control_api(
    gateway: Gateway,
) -> None:
    proxy = FakeProxy()
    app = build_asgi_app(gateway, proxy_factory=lambda _gw: proxy)
    server = ServerHandle(app, host="127.0.0.1", port=0)
    base_url = await server.start()  # the lifespan starts the gateway
    try:
        assert gateway.started
        async with httpx.AsyncClient(base_url=base_url) as client:
            proxied = await client.get("/proxy/services/data/v60.0/limits")
            assert (proxied.status_code, proxied.text) == (
                299,
                "proxy saw /proxy/services/data/v60.0/limits",
            )
            assert (await client.get("/c/acme/services/data")).status_code == 299
            assert (await client.get("/readyz")).status_code == 200
            # Prefixes only match whole segments.
            assert (await client.get("/proxyish")).status_code == 404
            assert (await client.get("/connections")).status_code == 401
        assert proxy.paths == ["/proxy/services/data/v60.0/limits", "/c/acme/services/data"]
    finally:
        await server.stop()
    assert not gateway.started  # the lifespan stopped it


async def test_forwarded_headers_do_not_change_the_scheme_or_the_client(
    gateway: Gateway,
) -> None:
    # Nothing in tokenkeep trusts X-Forwarded-* (the dashboard's Secure cookie follows the
    # real scheme); uvicorn must not rewrite the scope from them either, even from loopback.
    proxy = FakeProxy()
    server = ServerHandle(
        build_asgi_app(gateway, proxy_factory=lambda _gw: proxy), host="127.0.0.1", port=0
    )
    base_url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=base_url) as client:
            forged = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
            assert (await client.get("/proxy/x", headers=forged)).status_code == 299
    finally:
        await server.stop()
    assert proxy.seen == [("http", "127.0.0.1")]


async def test_without_a_proxy_the_proxy_paths_are_404(gateway: Gateway) -> None:
    await gateway.start()
    try:
        app = GatewayApp(gateway, create_app(gateway), proxy=None)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            response = await client.get("/proxy/services/data")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    finally:
        await gateway.stop()


def test_a_busy_port_is_one_clear_sentence() -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", free_port())


_SERVING_PROCESS = """
import asyncio, gc, json, sys
from tokenkeep.server import create_asgi_app

async def main():
    app = create_asgi_app()
    sent = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    started = asyncio.Event()

    async def receive():
        if len(sent) == 1:
            await started.wait()
        return inbox.pop(0)

    async def send(message):
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
            started.set()

    print(json.dumps({"threshold": gc.get_threshold()}))
    await app({"type": "lifespan"}, receive, send)
    print(json.dumps(sent))

asyncio.run(main())
"""


def test_a_serving_process_freezes_its_heap_and_collects_less_often(tmp_path: Path) -> None:
    """The uvicorn factory (what ``--workers`` processes run): after start-up the start-up
    heap is frozen and the young generation is collected every 20,000 net allocations, not
    CPython's 700 (a collection every ~19 proxied calls cost 5 % of the CPU)."""
    import json
    import subprocess
    import sys

    from tokenkeep.server import SERVING_GC_THRESHOLDS

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(
        TOKENKEEP_DATA_DIR=str(tmp_path / "data"),
        TOKENKEEP_SECRET_KEY="tk_test-key-0123456789abcdef",
    )
    done = subprocess.run(
        [sys.executable, "-c", _SERVING_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after, messages = (json.loads(line) for line in done.stdout.splitlines()[-3:])
    assert before["threshold"] == [700, 10, 10]  # CPython's default, before start-up
    assert after["threshold"] == list(SERVING_GC_THRESHOLDS)
    assert after["threshold"][0] >= 10_000
    assert after["frozen"] > 10_000  # the start-up heap is out of the collector's sight
    assert messages == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
