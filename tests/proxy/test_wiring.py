"""The proxy wired into a real gateway (src/tokenkeep/proxy/wiring.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from tests.proxy.proxy_support import EchoUpstream, EmulatorTokens, serve

from tokenkeep.config import load_settings
from tokenkeep.proxy import create_proxy_app
from tokenkeep.runtime import Gateway
from tokenkeep.store.models import OutboxRow

SECRET = "tk_wiring_secret_key_0123456789"
MAINTENANCE = json.dumps(
    [
        {
            "message": "Updates can't be made during maintenance.",
            "errorCode": "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE",
        }
    ]
).encode()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """A gateway NOT started yet: the test wires the proxy first, as the server does."""
    settings = load_settings(
        data_dir=tmp_path, secret_key=SECRET, scheduler_enabled=False, allow_insecure_loopback=True
    )
    gw = Gateway(settings)
    try:
        yield gw
    finally:
        await gw.stop()


async def test_the_gateway_proxy_checks_keys_uses_the_token_source_and_records_events(
    gateway: Gateway,
) -> None:
    app = create_proxy_app(gateway)
    tokens = EmulatorTokens()
    static = create_proxy_app(gateway, tokens)
    path = "/c/acme/services/data/v60.0/sobjects/Account"
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with (
        EchoUpstream().running() as echo,
        serve(app) as url,
        serve(static) as static_url,
        aiohttp.ClientSession() as http,
    ):
        # Gateway not started yet: 503 not_ready, nothing upstream.
        async with http.get(url + path, headers=auth) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "not_ready"
        await gateway.start()
        # Started: the gateway's own token source (the refresh coordinator) answers, and
        # knows no connection "acme": 404 with our error body, nothing upstream.
        async with http.get(url + path, headers=auth) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
        tokens.add_static("acme", echo.url, "00Dxx!upstream-token", org_id="00Dxx0000001AAA")
        call = static_url + path
        async with http.get(call, headers={"Authorization": "Bearer tk_not_a_key_000000"}) as resp:
            assert resp.status == 401
        async with http.get(call, headers=auth) as resp:
            assert resp.status == 200
        echo.script = [(503, MAINTENANCE, {})]
        async with http.post(call, headers=auth, json={"Name": "x"}) as resp:
            assert resp.headers["Tokenkeep-Cause"] == "maintenance"
        async with http.post(call, headers=auth, json={"Name": "y"}) as resp:
            assert (await resp.json())["error"]["code"] == "org_write_paused"
    assert len(echo.seen) == 2
    async with gateway.store.db.read() as session:
        rows = (await session.execute(select(OutboxRow))).scalars().all()
    assert [(r.event_type, r.org_id) for r in rows] == [
        ("org.maintenance_started", "00Dxx0000001AAA")
    ]
