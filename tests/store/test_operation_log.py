"""The operation log's store side, on SQLite and PostgreSQL: batched inserts, exact filters,
keyset cursors that never skip or repeat an entry, follow-mode tails, retention pruning."""

from __future__ import annotations

import sys
import threading
import time
from datetime import UTC, datetime, timedelta

from tokenkeep.clock import ManualClock
from tokenkeep.config import Settings
from tokenkeep.store import Store
from tokenkeep.store.operations import LogQuery
from tokenkeep.store.retention import LogRetention

T0 = datetime(2026, 12, 3, 14, 0, tzinfo=UTC)


def _entries(n: int, *, start: datetime = T0) -> list[dict[str, object]]:
    return [
        {
            # Two entries per second: ties on ``at`` must page by id.
            "at": start + timedelta(seconds=i // 2),
            "kind": "call" if i % 3 else "refresh",
            "outcome": "ok" if i % 4 else "error",
            "connection_id": f"c{i % 5}",
            "org_id": f"00D{i % 2}",
            "cause": "expired" if i % 7 == 0 else None,
            "status_code": (200, 401, 404, 503)[i % 4],
            "duration_ms": float(i),
            "detail": {"i": i},
        }
        for i in range(n)
    ]


def _with_after(query: LogQuery, after: tuple[datetime, int] | None) -> LogQuery:
    fields = {name: getattr(query, name) for name in LogQuery.__dataclass_fields__}
    fields["after"] = after
    return LogQuery(**fields)


async def test_every_filter_is_exact_and_pages_cover_everything_once(store: Store) -> None:
    rows = _entries(101)
    await store.operations.insert_many(rows)

    def expected(pred: object) -> list[int]:
        chosen = [r for r in rows if pred(r)]  # type: ignore[operator]
        chosen.sort(key=lambda r: (r["at"], r["detail"]["i"]), reverse=True)  # type: ignore[index]
        return [r["detail"]["i"] for r in chosen]  # type: ignore[index]

    cases = [
        (LogQuery(limit=7), lambda r: True),
        (LogQuery(org_id="00D1", limit=10), lambda r: r["org_id"] == "00D1"),
        (LogQuery(connection_id="c3", limit=4), lambda r: r["connection_id"] == "c3"),
        (LogQuery(kind="refresh", limit=5), lambda r: r["kind"] == "refresh"),
        (LogQuery(cause="expired", limit=2), lambda r: r["cause"] == "expired"),
        (LogQuery(status_code=401, limit=6), lambda r: r["status_code"] == 401),
        (LogQuery(status_class=5, limit=9), lambda r: r["status_code"] == 503),
        (LogQuery(outcome="error", limit=3), lambda r: r["outcome"] == "error"),
        (
            LogQuery(since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=20), limit=4),
            lambda r: T0 + timedelta(seconds=10) <= r["at"] < T0 + timedelta(seconds=20),
        ),
        (
            LogQuery(org_id="00D0", kind="call", status_class=4, limit=3),
            lambda r: r["org_id"] == "00D0" and r["kind"] == "call" and r["status_code"] == 404,
        ),
    ]
    for query, pred in cases:
        assert await _paged(store, query) == expected(pred), query


async def _paged(store: Store, query: LogQuery) -> list[int]:
    seen: list[int] = []
    after = None
    for _ in range(1000):
        page = await store.operations.page(_with_after(query, after))
        assert len(page.entries) <= query.limit
        seen.extend(e.detail["i"] for e in page.entries)
        if page.after is None:
            return seen
        after = page.after
    raise AssertionError("paging did not end")


async def test_a_cursor_is_stable_while_new_entries_arrive(store: Store) -> None:
    await store.operations.insert_many(_entries(20))
    first = await store.operations.page(LogQuery(limit=5))
    # Newer entries arrive between two pages: the next page is still the next 5.
    await store.operations.insert_many(_entries(10, start=T0 + timedelta(hours=1)))
    second = await store.operations.page(LogQuery(limit=5, after=first.after))
    assert [e.detail["i"] for e in first.entries] == [19, 18, 17, 16, 15]
    assert [e.detail["i"] for e in second.entries] == [14, 13, 12, 11, 10]


async def test_tail_returns_later_ids_oldest_first(store: Store) -> None:
    await store.operations.insert_many(_entries(6))
    everything = await store.operations.tail(LogQuery(), after_id=0)
    assert [e.detail["i"] for e in everything] == [0, 1, 2, 3, 4, 5]
    later = await store.operations.tail(LogQuery(kind="call"), after_id=everything[2].id)
    assert [e.detail["i"] for e in later] == [4, 5]


async def test_retention_prunes_old_entries_in_batches(
    store: Store, clock: ManualClock, store_settings: Settings
) -> None:
    now = clock.now()
    old = _entries(250, start=now - timedelta(days=40))
    recent = _entries(30, start=now - timedelta(days=29))
    await store.operations.insert_many(old + recent)
    settings = store_settings.model_copy(update={"log_retention_days": 30, "log_prune_batch": 100})
    retention = LogRetention(store.operations, settings, clock)
    assert await retention.prune() == 250
    left = await store.operations.tail(LogQuery(), after_id=0, limit=1000)
    assert len(left) == 30
    assert all(e.at >= now - timedelta(days=30) for e in left)
    assert await retention.prune() == 0


async def test_a_nul_in_a_logged_value_never_breaks_a_batch(store: Store) -> None:
    """PostgreSQL text refuses NUL: one such entry must not fail (and so stall) its batch."""
    rows = _entries(3)
    rows[1] = {**rows[1], "connection_id": "c\x001", "detail": {"path": "/a\x00b", "i": 1}}
    await store.operations.insert_many(rows)
    stored = await store.operations.tail(LogQuery(), after_id=0)
    assert [e.detail["i"] for e in stored] == [0, 1, 2]
    assert stored[1].connection_id == "c\ufffd1"
    assert stored[1].detail["path"] == "/a\x00b"  # JSON escapes it: kept as it was


async def test_a_lone_surrogate_or_odd_detail_never_breaks_a_batch(store: Store) -> None:
    rows = _entries(3)
    rows[0] = {**rows[0], "connection_id": "c\ud8001", "detail": {"path": "/\udc80", "i": 0}}
    rows[1] = {**rows[1], "org_id": "00D\u00e9", "detail": {"i": 1, 2: "two", "at": T0}}
    await store.operations.insert_many(rows)
    stored = await store.operations.tail(LogQuery(), after_id=0)
    assert [e.detail["i"] for e in stored] == [0, 1, 2]
    assert stored[0].connection_id == "c?1"
    assert stored[0].detail["path"] == "/\udc80"  # JSON escapes it: kept as it was
    assert stored[1].org_id == "00D\u00e9"
    assert stored[1].detail["2"] == "two"
    assert stored[1].detail["at"].startswith("2026-12-03")


async def test_epoch_seconds_are_stored_as_their_instant(store: Store) -> None:
    at = T0 + timedelta(microseconds=123456)
    await store.operations.insert_many([{**_entries(1)[0], "at": at.timestamp()}])
    (stored,) = await store.operations.tail(LogQuery(), after_id=0)
    assert stored.at == at


async def test_a_duration_that_is_not_a_number_never_breaks_a_batch(store: Store) -> None:
    rows = _entries(3)
    rows[0] = {**rows[0], "duration_ms": float("nan")}
    rows[2] = {**rows[2], "duration_ms": float("inf")}
    await store.operations.insert_many(rows)
    stored = await store.operations.tail(LogQuery(), after_id=0)
    assert [(e.detail["i"], e.duration_ms) for e in stored] == [(0, None), (1, 1.0), (2, None)]


async def test_a_batch_is_written_while_another_thread_keeps_the_interpreter_busy(
    store: Store,
) -> None:
    """A loaded gateway's event loop holds the GIL nearly all the time. The log's batch must
    not wait for the GIL once per row: with SQLite's ``executemany`` in aiosqlite's thread
    each row waited out a switch interval, so 500 rows took 500 of them (here 25 s)."""
    rows = _entries(500)
    finished = threading.Event()
    outcome: list[bool] = []

    def keep_busy() -> None:  # pure Python: it gives the GIL up only when asked to
        deadline = time.monotonic() + 12
        while not finished.is_set() and time.monotonic() < deadline:
            sum(range(200))
        outcome.append(finished.is_set())

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    busy = threading.Thread(target=keep_busy, daemon=True)
    try:
        busy.start()
        await store.operations.insert_many(rows)
        finished.set()
        busy.join()
    finally:
        finished.set()
        sys.setswitchinterval(before)
    assert outcome == [True], "the batch was still being written after 12 s"
    stored = await store.operations.tail(LogQuery(), after_id=0, limit=1000)
    assert [e.detail["i"] for e in stored] == list(range(500))


async def test_naive_datetimes_are_refused(store: Store) -> None:
    import pytest

    with pytest.raises(ValueError, match="naive"):
        await store.operations.insert_many([{**_entries(1)[0], "at": T0.replace(tzinfo=None)}])
