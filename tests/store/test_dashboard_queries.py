"""The dashboard's store queries on both engines: search, counts, the hourly activity."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tokenkeep.clock import ManualClock
from tokenkeep.store import ConnectionInput, Store
from tokenkeep.store.records import BucketCounts


async def _integration(store: Store, key: str = "sf") -> None:
    await store.integrations.put(
        key, client_id="cid", client_secret="s", login_url="https://login.salesforce.com"
    )


async def _connection(store: Store, conn_id: str, **extra: object) -> None:
    fields: dict[str, Any] = {
        "integration_key": "sf",
        "org_id": "00Dorg1",
        "user_id": "005u1",
        "instance_url": "https://acme.my.salesforce.com",
        "access_token": "00D!AQsecret",
        "refresh_token": "5Aep",
        "id": conn_id,
        **extra,
    }
    await store.connections.create(ConnectionInput(**fields))


async def test_search_filters_pages_and_counts(store: Store, clock: ManualClock) -> None:
    await _integration(store)
    for i in range(7):
        clock.advance(1)
        await _connection(
            store,
            f"c{i}",
            org_id=f"00Dorg{i % 2}",
            username=f"User{i}@Example.com",
            status="needs_reauth" if i == 3 else "active",
            status_reason="revoked:inactive_user" if i == 3 else None,
        )
    await _connection(store, "under_score")
    q = store.dashboard
    page, total = await q.search_connections(limit=3)
    assert total == 8
    assert [c.id for c in page.items] == ["under_score", "c6", "c5"]
    page2, _ = await q.search_connections(limit=3, cursor=page.next_cursor)
    assert [c.id for c in page2.items] == ["c4", "c3", "c2"]
    found, n = await q.search_connections(text="user4@example")
    assert ([c.id for c in found.items], n) == (["c4"], 1)
    found, n = await q.search_connections(text="_")
    assert [c.id for c in found.items] == ["under_score"]  # "_" is no wildcard
    found, n = await q.search_connections(reason="revoked")
    assert [c.id for c in found.items] == ["c3"]
    found, n = await q.search_connections(status="active", org_id="00Dorg1")
    assert {c.id for c in found.items} == {"c1", "c5", "under_score"}
    assert await q.status_counts() == {
        "sf": {"active": 7, "needs_reauth": 1, "action_required": 0, "error": 0}
    }


async def test_hourly_activity_sums_calls_and_causes_per_hour(
    store: Store, clock: ManualClock
) -> None:
    now = clock.now() + timedelta(hours=30, minutes=20)
    hour = now.replace(minute=0, second=0, microsecond=0)
    await store.org_counts.add(
        [
            BucketCounts("00Da", "sf", hour + timedelta(minutes=5), 10, 2, {"expired": 2}),
            BucketCounts("00Db", "sf", hour + timedelta(minutes=15), 5, 0, {}),
            BucketCounts("00Da", "sf", hour - timedelta(hours=2), 7, 1, {}),
            BucketCounts("00Da", "sf", hour - timedelta(hours=40), 99, 9, {}),  # too old
        ]
    )
    await store.operations.insert_many(
        [
            {"at": hour + timedelta(minutes=1), "kind": "call", "outcome": "error", "cause": c}
            for c in ("expired", "expired", "revoked")
        ]
        + [{"at": hour - timedelta(hours=2), "kind": "call", "outcome": "ok"}]
    )
    hours = await store.dashboard.hourly_activity(now)
    assert len(hours) == 24
    assert hours[-1].hour == hour
    assert (hours[-1].calls, hours[-1].session_errors) == (15, 2)
    assert hours[-1].causes == {"expired": 2, "revoked": 1}
    assert (hours[-3].calls, hours[-3].session_errors, hours[-3].causes) == (7, 1, {})
    assert sum(h.calls for h in hours) == 22
