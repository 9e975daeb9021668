"""The proactive scheduler: in one process on both engines, and 2 processes over 24 hours."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from lifecycle_support import Rig, connect, register_integration, token_client
from sqlalchemy import func, select

from tokenkeep.clock import FileClock
from tokenkeep.config import load_settings
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.errors import NeedsReauthError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.scheduler import RefreshScheduler
from tokenkeep.store import ConnectionInput, Database, Store, verify_keyring
from tokenkeep.store.models import ConnectionRow, OperationRow

WORKER = Path(__file__).with_name("scheduler_worker.py")


def _scheduler(rig: Rig, **kwargs: object) -> RefreshScheduler:
    return RefreshScheduler(
        rig.store,
        rig.coordinator,
        settings=rig.settings,
        clock=rig.clock,
        rng=random.Random(7),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_cycle_refreshes_due_connections_only_and_reports_lag(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    for i in range(4):
        await connect(rig.store, rig.emu, rig.client, user, f"c{i}", clock=rig.clock)
    scheduler = _scheduler(rig)
    report = await scheduler.run_once()
    assert (report.claimed, rig.refresh_grants()) == (0, 0)  # nothing due yet
    # c0 and c1 become due (their next_refresh_at is 15 min before the 2 h expiry).
    async with rig.store.db.write() as session:
        await session.execute(
            ConnectionRow.__table__.update()
            .where(ConnectionRow.id.in_(["c0", "c1"]))
            .values(next_refresh_at=rig.clock.now() - timedelta(seconds=120))
        )
    assert await scheduler.measure_lag() == 120
    report = await scheduler.run_once()
    assert (report.claimed, report.refreshed) == (2, 2)
    assert rig.refresh_grants() == 2
    assert scheduler.lag_seconds == 0
    for cid, version in (("c0", 2), ("c1", 2), ("c2", 1), ("c3", 1)):
        stored = await rig.store.connections.get(cid)
        assert stored.version == version
        assert stored.next_refresh_at is not None
        assert stored.next_refresh_at > rig.clock.now()
    # A minute before the first tokens expire, every connection has come due.
    rig.advance(7200 - 60)
    report = await scheduler.run_once()
    assert report.refreshed == 4
    for i in range(4):
        stored = await rig.store.connections.get(f"c{i}")
        assert stored.expires_at is not None
        assert stored.expires_at.timestamp() >= rig.clock.time() + 7200 - 1


async def test_imported_connections_are_planned_with_jitter(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    rig.emu.admin.patch_app(rig.emu.app_config.client_id, {"max_approvals": 100})
    for i in range(40):
        await connect(
            rig.store, rig.emu, rig.client, user, f"c{i}", clock=rig.clock, schedule=False
        )
    report = await _scheduler(rig).run_once()
    assert report.planned == 40
    assert report.claimed == 0
    page = await rig.store.connections.list(limit=100)
    times = {c.next_refresh_at for c in page.items}
    assert len(times) == 40  # spread out, not all in the same second
    for c in page.items:
        assert c.next_refresh_at is not None
        assert c.expires_at is not None
        assert c.next_refresh_at <= c.expires_at - timedelta(seconds=300)
        assert c.next_refresh_at >= c.expires_at - timedelta(seconds=7200)


async def test_token_endpoint_errors_back_off_per_org(rig: Rig) -> None:
    org_a, org_b = rig.emu.orgs
    for i in range(3):
        await connect(rig.store, rig.emu, rig.client, org_a.users[0], f"a{i}", clock=rig.clock)
        await connect(rig.store, rig.emu, rig.client, org_b.users[0], f"b{i}", clock=rig.clock)
    async with rig.store.db.write() as session:
        for i in range(3):  # a0 is the most overdue: claimed and tried first
            for prefix, extra in (("a", 0), ("b", 1)):
                await session.execute(
                    ConnectionRow.__table__.update()
                    .where(ConnectionRow.id == f"{prefix}{i}")
                    .values(next_refresh_at=rig.clock.now() - timedelta(seconds=100 - i - extra))
                )
    rig.emu.admin.add_fault({"target": "token", "kind": "error", "status": 503, "count": 1})
    scheduler = _scheduler(rig, concurrency=1)
    report = await scheduler.run_once()
    assert report.backed_off_orgs == [org_a.org_id]
    assert report.failed == 1
    # Org A's other rows were given back untouched; org B's were all refreshed.
    assert rig.refresh_grants() == 4  # a0 (503) + b0, b1, b2
    for i in range(3):
        assert (await rig.store.connections.get(f"b{i}")).version == 2
        assert (await rig.store.connections.get(f"a{i}")).version == 1
    report = await scheduler.run_once()  # org A still backing off: no token call for it
    assert rig.refresh_grants() == 4
    rig.advance(3600)
    report = await scheduler.run_once()
    assert report.refreshed == 3
    assert report.backed_off_orgs == []
    stored = await rig.store.connections.get("a0")
    assert (stored.status, stored.version, stored.refresh_attempts) == ("active", 2, 0)


# -- 2 scheduler processes, 1,000 connections, 24 hours ---------------------------------------

CONNECTIONS = 1000
TIMEOUT = 86400  # 24 h sessions: each connection comes due once in the 24 h walked through
STEP = 900
STEPS = 24 * 3600 // STEP


async def _quiet(store: Store, clock: FileClock) -> None:
    """Wait (bounded) until nothing is due, claimed or in flight, so that the next clock
    jump never expires a live lease (real clocks do not jump 15 minutes at once). While
    waiting, time creeps on (5 s per half second) as it would for real."""
    query = select(func.count()).where(
        (ConnectionRow.status == "active")
        & ((ConnectionRow.next_refresh_at <= clock.now()) | ConnectionRow.lease_owner.is_not(None))
    )
    for attempt in range(1, 3001):
        async with store.db.read() as session:
            if not await session.scalar(query):
                return
        await asyncio.sleep(0.01)
        if attempt % 50 == 0:
            clock.advance(5)  # time passes while we wait (a scheduler may be sleeping)
    async with store.db.read() as session:
        stuck = (
            await session.execute(
                select(
                    ConnectionRow.id,
                    ConnectionRow.next_refresh_at,
                    ConnectionRow.lease_owner,
                    ConnectionRow.lease_until,
                ).where(query.whereclause)  # type: ignore[arg-type]
            )
        ).all()
    raise AssertionError(f"the schedulers did not catch up at {clock.now()}: {stuck[:5]}")


@pytest.mark.multiprocess
@pytest.mark.slow
async def test_two_scheduler_processes_keep_1000_connections_fresh_for_24_hours(
    pg_url: str, tmp_path: Path, keyring: Keyring
) -> None:
    clock = FileClock.create(tmp_path / "clock")
    db = Database(pg_url, clock=clock)
    await db.upgrade()
    await verify_keyring(db, keyring)
    store = Store(db=db, keyring=keyring, clock=clock)
    settings = load_settings(database_url=pg_url, allow_insecure_loopback=True)
    rng = random.Random(5)
    async with Emulator.running(orgs=2, clock=clock) as emu, token_client(clock) as client:
        emu.admin.patch_app(emu.app_config.client_id, {"max_approvals": 1000})
        for org in emu.orgs:
            emu.admin.patch_org(org.org_id, {"session_timeout_seconds": TIMEOUT})
        await register_integration(store, emu, session_timeout_seconds=TIMEOUT)
        users = [u for org in emu.orgs for u in org.users]
        for start in range(0, CONNECTIONS, 50):  # connect in concurrent chunks
            await asyncio.gather(
                *(
                    connect(
                        store,
                        emu,
                        client,
                        users[i % len(users)],
                        f"c{i:04d}",
                        clock=clock,
                        session_timeout=TIMEOUT,
                        schedule=False,
                    )
                    for i in range(start, min(start + 50, CONNECTIONS))
                )
            )
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                json.dumps(
                    {
                        "db_url": pg_url,
                        "keys": keyring.export().reveal(),
                        "clock_file": str(clock.path),
                        "owner": f"scheduler-{i}",
                    }
                ),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=(tmp_path / f"scheduler-{i}.log").open("wb"),
            )
            for i in range(2)
        ]
        caller = RefreshCoordinator(store, client, settings=settings, clock=clock)
        served = 0
        try:
            for w in workers:
                assert w.stdout is not None
                assert (await asyncio.wait_for(w.stdout.readline(), 60)).strip() == b"ready"
            async with httpx.AsyncClient(timeout=10) as http:
                for _ in range(STEPS):
                    clock.advance(STEP)
                    # A trickle of callers while the schedulers work.
                    picks = [f"c{rng.randrange(CONNECTIONS):04d}" for _ in range(5)]
                    tokens = await asyncio.gather(*(caller.fresh_token(c) for c in picks))
                    for token in tokens:
                        assert token.valid_for(60, clock.time())
                        r = await http.get(
                            token.instance_url + "/services/data/v60.0/limits",
                            headers={"Authorization": f"Bearer {token.access_token.reveal()}"},
                        )
                        assert r.status_code == 200, r.text  # never an expired token
                        served += 1
                    await _quiet(store, clock)
        finally:
            for w in workers:
                if w.returncode is None and w.stdin is not None:
                    w.stdin.write(b"stop\n")
            outputs = []
            for w in workers:
                out, _ = await asyncio.wait_for(w.communicate(), timeout=60)
                assert w.returncode == 0, f"a scheduler failed: see {tmp_path}/scheduler-*.log"
                outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
        grants = len(emu.admin.requests(grant_type="refresh_token"))
    async with db.read() as session:
        rows = (
            await session.execute(
                select(OperationRow.connection_id, OperationRow.at, OperationRow.outcome)
                .where(OperationRow.kind == "refresh")
                .order_by(OperationRow.at)
            )
        ).all()
    await db.close()
    assert served == STEPS * 5
    outcomes = [outcome for _, _, outcome in rows]
    assert set(outcomes) == {"ok"}, sorted(outcomes)  # nothing fenced, nothing failed
    assert grants == len(rows) == sum(o["refreshes"] for o in outputs) + caller.refreshes
    assert caller.refreshes == 0  # the schedulers were always ahead of the callers
    assert all(o["refreshes"] > 0 for o in outputs)  # both processes shared the work
    per_connection: dict[str, list[float]] = defaultdict(list)
    for cid, at, _ in rows:
        per_connection[cid].append(at.timestamp())
    assert len(per_connection) == CONNECTIONS
    for times in per_connection.values():
        # Never twice in one cycle: consecutive refreshes are most of a lifetime apart.
        assert all(b - a >= TIMEOUT / 2 for a, b in itertools.pairwise(times))


async def test_an_import_without_refresh_token_works_until_expiry_then_needs_reauth(
    rig: Rig,
) -> None:
    """An oauth2 import without a refresh token: the scheduler leaves it alone (no attempt,
    no needs_reauth while the token still works); once expired, a caller is told to
    re-connect (reason no_refresh_token)."""
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    live = await rig.store.connections.get("c1", with_credentials=True)
    assert live.credentials is not None
    await rig.store.connections.delete("c1")
    expires = rig.clock.now() + timedelta(seconds=3600)
    await rig.store.connections.create(
        ConnectionInput(
            id="imp",
            integration_key="sf",
            org_id=live.org_id,
            user_id=live.user_id,
            username=live.username,
            instance_url=live.instance_url,
            id_url=live.id_url,
            access_token=live.credentials.access_token.reveal(),
            refresh_token=None,
            issued_at=rig.clock.now(),
            expires_at=expires,
            next_refresh_at=None,
        )
    )
    scheduler = _scheduler(rig)
    for _ in range(12):  # up to a few seconds before the known expiry
        await scheduler.run_once()
        rig.advance(299)
        stored = await rig.store.connections.get("imp")
        assert (stored.status, stored.status_reason) == ("active", None)
    assert rig.refresh_grants() == 0
    assert await scheduler.measure_lag() == 0
    # 12 s left: still served (the best token there is), and it works.
    token = await rig.coordinator.fresh_token("imp", min_ttl=60)
    assert token.access_token.reveal() == live.credentials.access_token.reveal()
    rig.advance(20)
    with pytest.raises(NeedsReauthError) as info:
        await rig.coordinator.fresh_token("imp", min_ttl=60)
    assert info.value.details["reason"] == "no_refresh_token"
    assert (await rig.store.connections.get("imp")).status == "needs_reauth"
