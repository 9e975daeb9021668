"""The delivery worker (src/tokenkeep/events/worker.py) on both engines, against a real
receiver on 127.0.0.1, driven by a ManualClock: retries, the 3-day cut-off, the timeout,
redelivery."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.events.receiver import eventually, receiving

from tokenkeep.clock import ManualClock
from tokenkeep.config import Settings, load_settings
from tokenkeep.events import WebhookWorker, new_webhook_secret
from tokenkeep.store import Store
from tokenkeep.store.webhooks import WebhookEndpoint
from tokenkeep.vocabulary import EventType


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        allow_insecure_loopback=True,
        webhook_url=None,
        webhook_secret=None,
        webhook_timeout_seconds=10,
        webhook_backoff_base_seconds=5,
        webhook_backoff_cap_seconds=3600,
    )


@pytest.fixture
async def worker(
    store: Store, settings: Settings, clock: ManualClock
) -> AsyncIterator[WebhookWorker]:
    w = WebhookWorker(store, settings=settings, clock=clock, rng=random.Random(7))
    try:
        yield w
    finally:
        await w.stop()  # closes its HTTP session (the loop was never started)


async def add_endpoint(store: Store, url: str, events: list[str] | None = None) -> WebhookEndpoint:
    return await store.webhooks.create(url=url, secret=new_webhook_secret(), events=events)


async def add_event(
    store: Store, event_type: str = EventType.ORG_MAINTENANCE_STARTED, org_id: str = "00Dorg"
) -> str:
    async with store.db.write() as session:
        return store.outbox.add_event(session, event_type, payload={"probes": 1}, org_id=org_id)


async def webhook_log(store: Store) -> list[tuple[str, int | None, int]]:
    entries = await store.operations.list(kind="webhook", limit=1000)
    return [(e.outcome, e.status_code, e.detail["attempt"]) for e in reversed(entries)]


async def drive(worker: WebhookWorker, clock: ManualClock, rounds: int) -> None:
    """Run ``rounds`` cycles, moving the clock past any backoff (at most the cap) between."""
    for _ in range(rounds):
        await worker.run_once()
        clock.advance(3600)


async def test_a_receiver_failing_five_times_then_answering_gets_exactly_one_success(
    store: Store, worker: WebhookWorker, clock: ManualClock
) -> None:
    async with receiving(statuses=[500, 502, 503, 404, 410]) as rx:
        endpoint = await add_endpoint(store, rx.url)
        event_id = await add_event(store)
        await drive(worker, clock, 10)
    assert rx.ids() == [event_id] * 6  # the same webhook-id on every retry
    assert [r.headers["webhook-id"] for r in rx.got] == [event_id] * 6
    assert await webhook_log(store) == [
        ("retrying", 500, 1),
        ("retrying", 502, 2),
        ("retrying", 503, 3),
        ("retrying", 404, 4),
        ("retrying", 410, 5),
        ("delivered", 200, 6),
    ]
    event = await store.events.get_event(event_id)
    assert event.status == "delivered"
    (delivery,) = event.deliveries
    assert delivery.endpoint_id == endpoint.id
    assert (delivery.state, delivery.attempts, delivery.last_status_code) == ("delivered", 6, 200)
    # Nothing is due any more: more cycles send nothing.
    await drive(worker, clock, 3)
    assert len(rx.got) == 6


async def test_backoff_waits_between_attempts_on_the_clock(
    store: Store, worker: WebhookWorker, clock: ManualClock
) -> None:
    async with receiving(default=500) as rx:
        await add_endpoint(store, rx.url)
        await add_event(store)
        await worker.run_once()
        assert len(rx.got) == 1
        await worker.run_once()  # not due yet: the clock has not moved
        assert len(rx.got) == 1
        (event,), _ = await store.events.list_events()
        next_at = event.deliveries[0].next_at
        assert next_at is not None
        assert clock.now() <= next_at <= clock.now() + timedelta(seconds=5)  # full jitter in [0, 5]
        clock.set(next_at)
        await worker.run_once()
        assert len(rx.got) == 2


async def test_after_three_days_of_failures_a_delivery_is_marked_failed(
    store: Store, worker: WebhookWorker, clock: ManualClock
) -> None:
    start = clock.now()
    async with receiving(default=503) as rx:
        await add_endpoint(store, rx.url)
        event_id = await add_event(store)
        for _ in range(200):
            await worker.run_once()
            clock.advance(3600)
            if (await store.events.get_event(event_id)).status != "pending":
                break
    event = await store.events.get_event(event_id)
    assert event.status == "failed"
    (delivery,) = event.deliveries
    assert delivery.state == "failed"
    assert delivery.failed_at is not None
    assert delivery.failed_at - start >= timedelta(seconds=259_200)
    assert delivery.failed_at - start <= timedelta(seconds=259_200 + 3600)
    log = await webhook_log(store)
    assert log[-1][0] == "failed"
    assert {o for o, _, _ in log[:-1]} == {"retrying"}
    assert len(rx.got) == len(log)
    failed, _ = await store.events.list_events(status="failed")
    assert [e.event_id for e in failed] == [event_id]
    assert (await store.events.list_events(status="pending"))[0] == []
    sent = len(rx.got)
    await drive(worker, clock, 3)
    assert len(rx.got) == sent  # a failed delivery is never sent again on its own


async def test_a_hanging_receiver_is_cut_off_by_the_timeout(
    store: Store, worker: WebhookWorker, clock: ManualClock
) -> None:
    async with receiving(hang=1) as rx:
        await add_endpoint(store, rx.url)
        event_id = await add_event(store)
        cycle = asyncio.create_task(worker.run_once())
        await eventually(lambda: len(rx.got) == 1)
        await asyncio.sleep(0.05)
        assert not cycle.done()  # waiting on the receiver
        clock.advance(9)
        await asyncio.sleep(0.05)
        assert not cycle.done()
        clock.advance(1.5)  # past TOKENKEEP_WEBHOOK_TIMEOUT_SECONDS=10
        await asyncio.wait_for(cycle, 5)
        entries = await store.operations.list(kind="webhook")
        assert [(e.outcome, e.status_code) for e in entries] == [("retrying", None)]
        assert "timed out after 10 s" in entries[0].detail["error"]
        # The next attempt (the receiver answers now) delivers it.
        clock.advance(3600)
        await worker.run_once()
    assert rx.ids() == [event_id, event_id]
    assert (await store.events.get_event(event_id)).status == "delivered"


async def test_redeliver_sends_a_delivered_event_again_with_the_same_id(
    store: Store, worker: WebhookWorker, clock: ManualClock
) -> None:
    async with receiving() as a, receiving() as b:
        first = await add_endpoint(store, a.url)
        await add_endpoint(store, b.url)
        event_id = await add_event(store)
        await worker.run_once()
        assert (a.ids(), b.ids()) == ([event_id], [event_id])
        assert await store.deliveries.redeliver(
            event_id, now=clock.now(), endpoint_id=first.id
        ) == [first.id]
        await worker.run_once()
        assert (a.ids(), b.ids()) == ([event_id] * 2, [event_id])
        assert sorted(await store.deliveries.redeliver(event_id, now=clock.now())) == sorted(
            [e.id for e in await store.webhooks.list()]
        )
        await worker.run_once()
    assert (a.ids(), b.ids()) == ([event_id] * 3, [event_id] * 2)
    event = await store.events.get_event(event_id)
    assert event.status == "delivered"
    assert [d.attempts for d in event.deliveries] == [1, 1]  # a new round counts from 1


async def test_event_filters_pick_the_endpoints(
    store: Store, worker: WebhookWorker, clock: ManualClock
) -> None:
    async with receiving() as reauth_only, receiving() as everything:
        await add_endpoint(store, reauth_only.url, events=[EventType.CONNECTION_NEEDS_REAUTH])
        await add_endpoint(store, everything.url)
        maintenance = await add_event(store, EventType.ORG_MAINTENANCE_STARTED)
        spike = await add_event(store, EventType.ORG_SESSION_ERROR_SPIKE)
        await worker.run_once()
    assert reauth_only.ids() == []
    assert sorted(everything.ids()) == sorted([maintenance, spike])


async def test_a_claimed_delivery_is_not_sent_by_a_second_worker_until_the_claim_expires(
    store: Store, settings: Settings, clock: ManualClock
) -> None:
    one = WebhookWorker(store, settings=settings, clock=clock, owner="one")
    two = WebhookWorker(store, settings=settings, clock=clock, owner="two")
    try:
        async with receiving(hang=1) as rx:
            await add_endpoint(store, rx.url)
            event_id = await add_event(store)
            sending = asyncio.create_task(one.run_once())
            await eventually(lambda: len(rx.got) == 1)
            assert await two.run_once() == 0  # claimed by "one": nothing for "two"
            # "one" dies here (its task is cancelled: no outcome is written); its claim
            # expires after the lease and "two" sends the delivery again.
            sending.cancel()
            with pytest.raises(asyncio.CancelledError):
                await sending
            clock.advance(one.lease_seconds - 1)
            assert await two.run_once() == 0
            clock.advance(2)
            assert await two.run_once() == 1
        assert rx.ids() == [event_id, event_id]
        assert (await store.events.get_event(event_id)).status == "delivered"
    finally:
        await one.stop()
        await two.stop()


async def test_the_target_is_checked_again_at_delivery_time(
    store: Store, settings: Settings, clock: ManualClock
) -> None:
    # Stored while loopback was allowed; the setting is off now (or DNS moved the name
    # onto a private address): nothing is sent, the attempt fails and is retried later.
    strict = WebhookWorker(
        store,
        settings=settings.model_copy(update={"allow_insecure_loopback": False}),
        clock=clock,
    )
    try:
        async with receiving() as rx:
            await add_endpoint(store, rx.url)
            event_id = await add_event(store)
            await strict.run_once()
        assert rx.got == []
        (entry,) = await store.operations.list(kind="webhook")
        assert entry.outcome == "retrying"
        assert entry.status_code is None
        assert "refused target" in entry.detail["error"]
        assert "non-public address" in entry.detail["error"]
        assert (await store.events.get_event(event_id)).status == "pending"
    finally:
        await strict.stop()


async def test_deleting_an_endpoint_drops_its_pending_deliveries(
    store: Store, worker: WebhookWorker, clock: ManualClock
) -> None:
    async with receiving(default=500) as rx:
        endpoint = await add_endpoint(store, rx.url)
        event_id = await add_event(store)
        await worker.run_once()
        assert await store.deliveries.pending_count() == 1
        await store.webhooks.delete(endpoint.id)
        assert await store.deliveries.pending_count() == 0
        clock.advance(3600)
        await worker.run_once()
    assert rx.ids() == [event_id]
    event = await store.events.get_event(event_id)
    assert (event.deliveries, event.status) == ((), "delivered")
