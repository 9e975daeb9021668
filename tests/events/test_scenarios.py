"""Webhooks end to end: the emulator, a real gateway (``tokenkeep.harness``) on each engine,
its worker, and a real receiver. What an app that subscribes sees."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from tests.events.receiver import Receiver, eventually, receiving

from tokenkeep.client import verify_webhook
from tokenkeep.clock import OffsetClock
from tokenkeep.events import new_webhook_secret
from tokenkeep.harness import GatewayUnderTest, running_gateway
from tokenkeep.store.operations import STANDARD_KEYS

ACCOUNTS = "/services/data/v60.0/sobjects/Account"
LIMITS = "/services/data/v60.0/limits"
CANARY_ACCESS = "00DCANARY!AQcanaryAccessToken7f3a9"
CANARY_REFRESH = "5Aep861CanaryRefreshToken9b1c"
SECRET = new_webhook_secret().reveal()


@pytest.fixture
async def rx() -> AsyncIterator[Receiver]:
    async with receiving() as receiver:
        yield receiver


@pytest.fixture
async def gw(tmp_path: Path, db_url: str, rx: Receiver) -> AsyncIterator[GatewayUnderTest]:
    async with running_gateway(
        tmp_path / "tk",
        orgs=2,
        clock=OffsetClock(),
        database_url=db_url,
        webhook_url=rx.url,
        webhook_secret=SECRET,
        webhook_poll_seconds=0.05,
        write_pause_probe_seconds=1.0,
    ) as gw:
        yield gw


def _api(gw: GatewayUnderTest) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gw.base_url,
        headers={"Authorization": f"Bearer {gw.api_key.reveal()}"},
        timeout=30,
    )


def _events(rx: Receiver, event_type: str | None = None) -> list[dict[str, Any]]:
    found = [r.event for r in rx.got]
    return [e for e in found if event_type is None or e["type"] == event_type]


async def _settled(gw: GatewayUnderTest) -> None:
    """Wait until nothing is left to deliver."""

    async def done() -> bool:
        return await gw.gateway.store.deliveries.pending_count() == 0

    await eventually(done, within=15)


async def test_a_revoked_connection_is_delivered_once_as_needs_reauth(
    gw: GatewayUnderTest, rx: Receiver
) -> None:
    await gw.connect("c1")
    user = gw.emulator.orgs[0].users[0]
    gw.emulator.admin.set_password(user.username, "N3w-password!")
    async with _api(gw) as api:
        first = await api.post("/connections/c1/refresh")
        assert first.status_code == 409, first.text
        assert first.json()["error"]["code"] == "needs_reauth"
        # Asked again, and through the proxy: known already, no second event.
        assert (await api.post("/connections/c1/refresh")).status_code == 409
        assert (await api.get(f"/c/c1{LIMITS}")).status_code == 409
    await _settled(gw)
    await asyncio.sleep(0.2)
    reauth = _events(rx, "connection.needs_reauth")
    assert len(reauth) == 1
    data = reauth[0]["data"]
    assert data["connection_id"] == "c1"
    assert data["integration"] == gw.integration
    assert data["org_id"] == gw.emulator.orgs[0].org_id
    assert data["status"] == "needs_reauth"
    assert data["reason"].startswith("revoked")
    assert "connect link" in data["fix"]
    assert [e["type"] for e in _events(rx)] == ["connection.created", "connection.needs_reauth"]
    for got in rx.got:
        # The library's own check (real time: the gateway's clock runs with it here) and ours.
        assert Webhook(SECRET).verify(got.body, got.headers) == got.event
        assert verify_webhook(got.headers, got.body, SECRET) == got.event
        assert got.headers["webhook-id"].startswith("evt_")


async def test_every_event_a_scenario_produces_carries_the_standard_keys_and_no_token(
    gw: GatewayUnderTest, rx: Receiver
) -> None:
    emu = gw.emulator
    org0, org1 = emu.orgs
    await gw.connect("acme")  # connection.created
    await gw.connect("globex", org=1, via="import")  # connection.created
    async with _api(gw) as api:
        # A canary: a recognisable token pair, imported; the emulator refuses its refresh.
        canary = await api.post(
            "/connections",
            json={
                "connection_id": "canary",
                "integration": gw.integration,
                "credentials": {
                    "access_token": CANARY_ACCESS,
                    "refresh_token": CANARY_REFRESH,
                    "instance_url": org0.instance_url,
                    "id": f"{emu.login_url}/id/{org0.org_id}/005CANARY0000000AA",
                },
            },
        )
        assert canary.status_code == 201, canary.text
        refused = await api.post("/connections/canary/refresh")
        assert refused.status_code == 409  # connection.needs_reauth

        # Revoked, then reconnected: connection.needs_reauth, then connection.recovered.
        user = org0.users[0]
        emu.admin.set_password(user.username, "N3w-password!")
        assert (await api.post("/connections/acme/refresh")).status_code == 409
        user.password = "N3w-password!"
        await gw.connect("acme")

        # An instance move: connection.instance_moved.
        emu.admin.advance_clock(1900)
        emu.admin.patch_org(org1.org_id, {"instance_url": "new"})
        moved = await api.get(f"/c/globex{LIMITS}")
        assert moved.status_code == 200, moved.text

        # Maintenance: org.maintenance_started, then org.maintenance_ended.
        emu.admin.patch_org(org1.org_id, {"read_only": True})
        assert (await api.post(f"/c/globex{ACCOUNTS}", json={"Name": "A"})).status_code >= 500
        emu.admin.patch_org(org1.org_id, {"read_only": False})
        await asyncio.sleep(1.2)
        assert (await api.post(f"/c/globex{ACCOUNTS}", json={"Name": "B"})).status_code == 201
    # The probe's resume is written after its answer has gone back to the client.
    await eventually(lambda: _events(rx, "org.maintenance_ended"), within=15)
    await _settled(gw)
    types = [e["type"] for e in _events(rx)]
    for expected in (
        "connection.created",
        "connection.needs_reauth",
        "connection.recovered",
        "connection.instance_moved",
        "org.maintenance_started",
        "org.maintenance_ended",
    ):
        assert expected in types, (expected, types)
    assert types.count("connection.needs_reauth") == 2  # canary + acme, once each
    for event in _events(rx):
        assert set(event) == {"type", "timestamp", "data"}
        assert event["timestamp"].endswith("Z")
        data = event["data"]
        assert set(STANDARD_KEYS) <= set(data), event
        if event["type"].startswith("connection."):
            assert data["connection_id"] in {"acme", "globex", "canary"}
            assert data["integration"] == gw.integration, event
            assert data["org_id"] in {org0.org_id, org1.org_id}
            assert data["status"] in {"active", "needs_reauth", "action_required", "error"}
        else:
            assert data["org_id"] == org1.org_id
    # No token in any body: the canary, and every token the emulator ever issued.
    issued = set(emu.state.access) | set(emu.state.refresh_index)
    assert issued
    bodies = [r.body.decode() for r in rx.got]
    for token in {CANARY_ACCESS, CANARY_REFRESH, *issued}:
        assert not any(token in body for body in bodies), token[:10]
    assert not any(SECRET in json.dumps(r.headers) + r.body.decode() for r in rx.got)
    # Every attempt was logged.
    async with _api(gw) as api:
        logs = (await api.get("/logs", params={"kind": "webhook", "limit": 1000})).json()
    assert len(logs["data"]) == len(rx.got)


async def test_the_real_gateway_timestamp_is_fresh(gw: GatewayUnderTest, rx: Receiver) -> None:
    await gw.connect("c1")
    await eventually(lambda: len(rx.got) == 1)
    sent = int(rx.got[0].headers["webhook-timestamp"])
    assert abs(time.time() - sent) < 30
