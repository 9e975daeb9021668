"""The operation log's write queue: never blocks, never loses silently, drains on stop.

The sink is the real store's ``insert_many``; a "slow database" is that sink held behind
an event, a "down database" is the store closed under it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tokenkeep.clock import ManualClock
from tokenkeep.observability.metrics import Metrics
from tokenkeep.observability.oplog import OperationQueue
from tokenkeep.store import Store
from tokenkeep.store.operations import LogQuery


def _entry(i: int) -> dict[str, Any]:
    return {"kind": "call", "outcome": "ok", "status_code": 200, "detail": {"i": i}}


async def _stored(store: Store) -> list[int]:
    rows = await store.operations.tail(LogQuery(), after_id=0, limit=1000)
    return sorted(r.detail["i"] for r in rows)


async def test_entries_reach_the_store_in_batches(store: Store, clock: ManualClock) -> None:
    batches: list[int] = []

    async def sink(rows: list[dict[str, Any]]) -> None:
        batches.append(len(rows))
        await store.operations.insert_many(rows)

    queue = OperationQueue(sink, clock=clock, batch_size=50, interval_seconds=0.05)
    await queue.start()
    try:
        for i in range(120):
            assert queue.put(_entry(i))
        for _ in range(200):
            if queue.written == 120:
                break
            await asyncio.sleep(0.01)
    finally:
        await queue.stop()
    assert await _stored(store) == list(range(120))
    assert max(batches) <= 50
    assert len(batches) >= 3
    rows = await store.operations.tail(LogQuery(), after_id=0, limit=1)
    assert rows[0].at == clock.now()  # ``at`` is the put time on the gateway's clock


async def test_entries_arriving_during_a_write_wait_for_a_full_batch_or_the_interval(
    store: Store, clock: ManualClock
) -> None:
    """A busy proxy puts entries while a batch is being written: they must go out in the
    next full batch, not at once in a small one (which made ~80 small transactions a
    second under load)."""
    writing, release = asyncio.Event(), asyncio.Event()
    batches: list[int] = []

    async def sink(rows: list[dict[str, Any]]) -> None:
        batches.append(len(rows))
        writing.set()
        await release.wait()
        await store.operations.insert_many(rows)

    queue = OperationQueue(sink, clock=clock, batch_size=10, interval_seconds=60)
    await queue.start()
    try:
        for i in range(10):
            queue.put(_entry(i))  # a full batch: written at once
        await asyncio.wait_for(writing.wait(), 5)
        for i in range(10, 13):
            queue.put(_entry(i))  # arrive while the first batch is being written
        release.set()
        for _ in range(100):
            if queue.written == 10:
                break
            await asyncio.sleep(0.01)
        for _ in range(20):
            await asyncio.sleep(0)  # the flush task's next steps
        assert batches == [10]
        assert queue.depth == 3
        for i in range(13, 20):
            queue.put(_entry(i))  # the batch is full now
        for _ in range(100):
            if queue.written == 20:
                break
            await asyncio.sleep(0.01)
        assert batches == [10, 10]
    finally:
        await queue.stop()
    assert await _stored(store) == list(range(20))


async def test_a_slow_database_never_blocks_and_overflow_is_counted(
    store: Store, clock: ManualClock
) -> None:
    gate = asyncio.Event()

    async def slow(rows: list[dict[str, Any]]) -> None:
        await gate.wait()
        await store.operations.insert_many(rows)

    metrics = Metrics()
    queue = OperationQueue(
        slow,
        clock=clock,
        capacity=100,
        batch_size=10,
        interval_seconds=0.01,
        on_drop=metrics.log_dropped.inc,
    )
    await queue.start()
    try:
        accepted = sum(queue.put(_entry(i)) for i in range(150))  # never awaits
        await asyncio.sleep(0.05)
        # One batch of 10 is in flight, so up to 110 fit; the rest are counted, not lost
        # silently.
        assert accepted + queue.dropped == 150
        assert queue.dropped >= 40
        assert metrics.registry.get_sample_value("tokenkeep_log_queue_dropped_total") == float(
            queue.dropped
        )
        gate.set()
    finally:
        await queue.stop()
    assert len(await _stored(store)) == accepted


async def test_a_failing_flush_keeps_its_batch_and_stop_drains(
    store: Store, clock: ManualClock
) -> None:
    failures = 2

    async def flaky(rows: list[dict[str, Any]]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("database away")
        await store.operations.insert_many(rows)

    queue = OperationQueue(flaky, clock=clock, batch_size=5, interval_seconds=60)
    for i in range(12):
        queue.put(_entry(i))
    assert not await queue.flush()  # failed: the batch is back at the front
    assert not await queue.flush()
    assert queue.depth == 12
    await queue.stop()  # drains what is left
    assert await _stored(store) == list(range(12))
    assert queue.dropped == 0


async def test_flush_all_makes_this_process_entries_visible_at_once(
    store: Store, clock: ManualClock
) -> None:
    queue = OperationQueue(store.operations.insert_many, clock=clock, interval_seconds=60)
    await queue.start()
    try:
        queue.put(_entry(1))
        assert await queue.flush_all()
        assert await _stored(store) == [1]
    finally:
        await queue.stop()
