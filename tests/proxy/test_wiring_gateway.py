"""The proxy as ``tokenkeep serve`` runs it: wired to the gateway's REAL refresh coordinator.

tests/proxy/test_app_*.py drive :class:`~tokenkeep.proxy.app.ProxyApp` with a test
``TokenSource``; these run the same promises through a whole gateway (store, coordinator,
outbox) in front of the emulator, so the seam between the proxy and the lifecycle is proven
too: one refresh for many callers, a revocation's cause word and 409, maintenance events in
the outbox.
"""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from tokenkeep.store.models import OutboxRow
from tokenkeep.testing import GatewayUnderTest

LIMITS = "/services/data/v60.0/limits"
ACCOUNTS = "/services/data/v60.0/sobjects/Account"


async def _org_events_soon(gw: GatewayUnderTest) -> list[OutboxRow]:
    """The org.* outbox rows, once there are some (up to 5 s)."""
    rows: list[OutboxRow] = []
    for _ in range(100):
        async with gw.gateway.store.db.read() as session:
            rows = list((await session.execute(select(OutboxRow))).scalars().all())
        rows = [r for r in rows if r.event_type.startswith("org.")]
        if rows:
            break
        await asyncio.sleep(0.05)
    return rows


def _proxy(gw: GatewayUnderTest, connection_id: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gw.proxy_url(connection_id),
        headers={"Authorization": f"Bearer {gw.api_key.reveal()}"},
        timeout=60,
    )


async def test_100_concurrent_calls_on_a_dead_session_make_one_refresh(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("acme")
    async with _proxy(gw, "acme") as sf:
        assert (await sf.get(LIMITS)).status_code == 200
        before = gw.grants("refresh_token")
        gw.expire_sessions()  # the emulator's sessions die; the gateway still holds the token
        answers = await asyncio.gather(*(sf.get(LIMITS) for _ in range(100)))
    assert [a.status_code for a in answers] == [200] * 100
    assert gw.grants("refresh_token") == before + 1


async def test_a_revoked_grant_is_named_then_answered_409_without_salesforce(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("acme", user=1)
    user = gw.emulator.orgs[0].users[1]
    async with _proxy(gw, "acme") as sf:
        assert (await sf.get(LIMITS)).status_code == 200
        gw.emulator.admin.set_password(user.username, "N3w-password!")
        gw.expire_sessions()
        first = await sf.get(LIMITS)
        grants = gw.grants("refresh_token")
        data_calls = len(gw.emulator.admin.requests(path=LIMITS))
        second = await sf.get(LIMITS)
    # Salesforce's own 401, unchanged, with the cause word; one refresh attempt only.
    assert first.status_code == 401
    assert first.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    assert first.headers["Tokenkeep-Cause"] == "revoked"
    # Known as needs_reauth: our 409 at once, no token call and no data call.
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "needs_reauth"
    assert gw.grants("refresh_token") == grants
    assert data_calls > 0
    assert len(gw.emulator.admin.requests(path=LIMITS)) == data_calls


async def test_maintenance_pauses_writes_and_records_the_event(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    connection = await gw.connect("acme")
    gw.emulator.admin.patch_org(connection.org_id, {"read_only": True})
    async with _proxy(gw, "acme") as sf:
        refused = await sf.post(ACCOUNTS, json={"Name": "x"})
        writes_before = len(gw.emulator.admin.requests(path=ACCOUNTS))
        paused = await sf.post(ACCOUNTS, json={"Name": "y"})
        read = await sf.get(LIMITS)
    assert refused.headers["Tokenkeep-Cause"] == "maintenance"
    assert paused.status_code == 503
    assert paused.json()["error"]["code"] == "org_write_paused"
    assert "Retry-After" in paused.headers
    assert writes_before > 0
    assert len(gw.emulator.admin.requests(path=ACCOUNTS)) == writes_before
    assert read.status_code == 200
    # The pause is shared through the database: its event is written in the transaction
    # that pauses, right after the refused write's answer was relayed.
    rows = await _org_events_soon(gw)
    assert [(r.event_type, r.org_id) for r in rows] == [
        ("org.maintenance_started", connection.org_id)
    ]
