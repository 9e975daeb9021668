"""tokenkeep.store.operations: the operation log and the outbox (both engines)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tokenkeep.clock import ManualClock
from tokenkeep.store import Store
from tokenkeep.store.models import OutboxRow


async def test_operation_log_filters_newest_first(store: Store, clock: ManualClock) -> None:
    start = clock.now()
    await store.operations.log("refresh", outcome="ok", connection_id="c1", org_id="00DA")
    clock.advance(1)
    await store.operations.log(
        "proxy",
        outcome="error",
        connection_id="c1",
        org_id="00DA",
        cause="expired",
        status_code=401,
        duration_ms=12.5,
        detail={"path": "/services/data"},
    )
    clock.advance(1)
    await store.operations.log("proxy", outcome="ok", connection_id="c2", org_id="00DB")
    entries = await store.operations.list(org_id="00DA")
    assert [(e.kind, e.outcome) for e in entries] == [("proxy", "error"), ("refresh", "ok")]
    assert entries[0].cause == "expired"
    assert entries[0].detail == {"path": "/services/data"}
    assert [e.connection_id for e in await store.operations.list(kind="proxy")] == ["c2", "c1"]
    since = await store.operations.list(since=start + timedelta(seconds=1))
    assert len(since) == 2
    assert len(await store.operations.list(limit=1)) == 1


async def _event_then_fail(store: Store) -> None:
    async with store.db.write() as session:
        store.outbox.add_event(session, "connection.refresh_failed", payload={"x": 1})
        await store.operations.log("refresh", outcome="error", session=session)
        raise RuntimeError("the state change failed")


async def test_outbox_event_commits_and_rolls_back_with_its_transaction(store: Store) -> None:
    async with store.db.write() as session:
        event_id = store.outbox.add_event(
            session, "connection.created", payload={"connection_id": "c1"}, connection_id="c1"
        )
        await store.operations.log("connect", outcome="ok", connection_id="c1", session=session)
    assert event_id.startswith("evt_")
    with pytest.raises(RuntimeError):
        await _event_then_fail(store)
    async with store.db.read() as session:
        events = (await session.scalars(select(OutboxRow))).all()
        log_count = await session.scalar(select(func.count()).select_from(OutboxRow))
    assert [(e.event_id, e.event_type, e.delivered_at) for e in events] == [
        (event_id, "connection.created", None)
    ]
    assert log_count == 1
    assert [e.kind for e in await store.operations.list()] == ["connect"]
