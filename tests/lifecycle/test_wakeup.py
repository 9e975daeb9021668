"""Waiters on another process's refresh: woken by the holder's NOTIFY on PostgreSQL.

Two coordinators on one database stand for two gateway processes (each has its own
flights, so the second one does not get the lease and waits on the row). The waiter's
fallback re-read is set to 30 s: on PostgreSQL only the holder's notification can wake it
within the test's bound; on SQLite it polls every 10 ms as before.
"""

from __future__ import annotations

import asyncio

from lifecycle_support import Rig, connect

TOKEN_LATENCY = 0.3


async def _until_leased(rig: Rig, owner: str) -> None:
    for _ in range(500):  # bounded: 5 s
        row = await rig.store.refresh_state.peek("c1")
        if row is not None and row.lease_owner == owner:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the holder never took the lease")


async def test_a_waiter_wakes_when_the_other_process_lands_its_refresh(
    rig: Rig, db_url: str
) -> None:
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    rig.advance(7300)  # expired on both sides
    rig.emu.admin.add_fault(target="token", kind="latency", latency_seconds=TOKEN_LATENCY)
    holder, waiter = rig.coordinator, rig.new_coordinator(owner="waiter")
    waiter.wakeup.fallback_interval = 30.0
    loop = asyncio.get_running_loop()
    try:
        first = asyncio.create_task(holder.fresh_token("c1"))
        await _until_leased(rig, holder.owner)
        started = loop.time()
        second = await asyncio.wait_for(waiter.fresh_token("c1"), 10)
        waited = loop.time() - started
        token = await first
    finally:
        await holder.aclose()
        await waiter.aclose()
    assert rig.refresh_grants() == 1
    assert second.version == token.version == 2
    assert second.access_token.fingerprint == token.access_token.fingerprint
    assert waiter.refreshes == 0
    assert waited < TOKEN_LATENCY + 0.5  # not the 30 s fallback
    if db_url.startswith("postgresql"):
        assert waiter.wakeup.enabled
        assert waiter.wakeup.notifications >= 1
    else:
        assert not waiter.wakeup.enabled  # SQLite polls


async def test_polling_can_be_chosen_on_postgresql_too(rig: Rig) -> None:
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    rig.advance(7300)
    rig.emu.admin.add_fault(target="token", kind="latency", latency_seconds=TOKEN_LATENCY)
    waiter = rig.new_coordinator(owner="waiter", notify=False)
    try:
        first = asyncio.create_task(rig.coordinator.fresh_token("c1"))
        await _until_leased(rig, rig.coordinator.owner)
        second = await asyncio.wait_for(waiter.fresh_token("c1"), 10)
        token = await first
    finally:
        await rig.coordinator.aclose()
        await waiter.aclose()
    assert not waiter.wakeup.enabled
    assert waiter.wakeup.notifications == 0
    assert second.version == token.version
    assert rig.refresh_grants() == 1
