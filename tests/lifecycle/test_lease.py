"""The lease and the fence: a slow token endpoint never produces two stored results."""

from __future__ import annotations

import asyncio

import pytest
from lifecycle_support import Rig, connect
from sqlalchemy import select

from tokenkeep.errors import TransientUpstreamError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.store.models import ConnectionRow, OperationRow


async def _lease_owner(rig: Rig, connection_id: str) -> str | None:
    async with rig.store.db.read() as session:
        return await session.scalar(
            select(ConnectionRow.lease_owner).where(ConnectionRow.id == connection_id)
        )


async def _wait_for_lease(rig: Rig, owner: str) -> None:
    for _ in range(500):
        if await _lease_owner(rig, "c1") == owner:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the first worker never took the lease")


async def _wait_for_renewal(rig: Rig) -> None:
    """Until the heartbeat has pushed the lease past the advanced clock (bounded)."""
    for _ in range(500):
        async with rig.store.db.read() as session:
            until = await session.scalar(
                select(ConnectionRow.lease_until).where(ConnectionRow.id == "c1")
            )
        if until is not None and until > rig.clock.now():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the heartbeat never renewed the lease")


def _short_lease(rig: Rig, **kwargs: object) -> RefreshCoordinator:
    settings = rig.settings.model_copy(update={"refresh_lease_seconds": 1.0})
    return RefreshCoordinator(
        rig.store,
        rig.client,
        settings=settings,
        clock=rig.clock,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_the_heartbeat_keeps_a_slow_refresh_exclusive(rig: Rig) -> None:
    """Latency > lease: the lease is renewed while the call is in flight, so the second
    worker waits instead of replaying the (rotated) refresh token."""
    rig.emu.admin.patch_app(rig.emu.app_config.client_id, {"rotate_refresh_tokens": True})
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    rig.advance(7300)
    first = _short_lease(rig, heartbeat_interval=0.02)
    second = _short_lease(rig)
    rig.emu.admin.add_fault(
        {"target": "token", "kind": "latency", "latency_seconds": 0.8, "count": 1}
    )
    task_a = asyncio.create_task(first.fresh_token("c1"))
    await _wait_for_lease(rig, first.owner)
    rig.clock.advance(5)  # five lease lengths pass while the provider is slow
    await _wait_for_renewal(rig)
    token_b = await second.fresh_token("c1")
    token_a = await task_a
    assert rig.refresh_grants() == 1
    assert token_a.access_token == token_b.access_token
    assert token_a.version == token_b.version == 2
    # No replay of the rotated-out token happened: the stored family still refreshes.
    again = await first.refresh("c1")
    assert again.version == 3
    stored = await rig.store.connections.get("c1")
    assert stored.status == "active"


async def test_a_taker_does_not_refresh_beside_a_token_call_still_in_flight(rig: Rig) -> None:
    """A stalled worker (no heartbeat) loses its lease while Salesforce is still processing
    its token call. The worker that takes over is answered "token request is already being
    processed" (Salesforce's concurrent-refresh answer) and backs off, not a revocation;
    the stalled worker's late answer is still committed (a failure does not bump the
    version): one grant, one stored token, both callers served it. (A late write fenced
    off by a newer stored token: tests/reliability/test_slow_token_endpoint.py, which
    freezes a real process between Salesforce's answer and its commit.)"""
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    rig.advance(7300)
    stalled = _short_lease(rig, heartbeat_interval=1000)
    second = _short_lease(rig)
    rig.emu.admin.add_fault(
        {"target": "token", "kind": "latency", "latency_seconds": 1.0, "count": 1}
    )
    task_a = asyncio.create_task(stalled.fresh_token("c1"))
    await _wait_for_lease(rig, stalled.owner)
    rig.clock.advance(5)  # the stalled worker's lease expires
    with pytest.raises(TransientUpstreamError, match="already being processed"):
        await second.fresh_token("c1")
    token_a = await task_a
    grants = rig.emu.admin.requests(grant_type="refresh_token")
    assert [(g["status"], g["errorCode"]) for g in grants] == [(400, "invalid_grant"), (200, None)]
    token_b = await second.fresh_token("c1")
    assert token_b.access_token == token_a.access_token
    assert stalled.fenced_writes + second.fenced_writes == 0
    stored = await rig.store.connections.get("c1", with_credentials=True)
    assert (stored.status, stored.version, stored.refresh_attempts) == ("active", 2, 0)
    assert stored.credentials is not None
    assert stored.credentials.access_token == token_a.access_token
    async with rig.store.db.read() as session:
        outcomes = list(
            await session.scalars(
                select(OperationRow.outcome).where(OperationRow.kind == "refresh")
            )
        )
    assert "ok" in outcomes
    assert "fenced" not in outcomes
