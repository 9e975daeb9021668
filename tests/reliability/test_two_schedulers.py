"""Issue 13, suite item 8: two scheduler processes on 10,000 due connections -- each
connection refreshed exactly once (PostgreSQL; 1,000 on SQLite).

Every connection is its own grant (family) at the emulator, made in the emulator's state
directly and stored with the store's own encryption (no 10,000 authorization round trips).
"Exactly once" is counted by the emulator, per connection: a family that was refreshed
once holds two access tokens (the first one and the refreshed one); the request log
holds exactly N refresh grants; every row ends at version 2 holding the family's newest
access token, valid for the org's whole session.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from tests.lifecycle.lifecycle_support import (
    connect,
    register_integration,
    start_scheduler_worker,
    stop_scheduler_worker,
    token_client,
)

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.emulator.state import Family
from tokenkeep.store import Database, Store, verify_keyring
from tokenkeep.store.connection_tokens import credentials_of, token_columns
from tokenkeep.store.models import ConnectionRow, OperationRow

TIMEOUT = 7200  # the orgs' session timeout
BATCH = 2000


async def _due_connections(
    store: Store, emu: Emulator, count: int, template_id: str
) -> dict[str, Family]:
    """``count`` due connections ``s<n>``, each its own emulator grant; returns the families."""
    table = ConnectionRow.__table__
    async with store.db.read() as session:
        template = dict(
            (await session.execute(select(table).where(table.c.id == template_id))).one()._mapping
        )
    app = emu.app_config
    app.max_approvals = count + 10  # in-process: the admin API caps it at 1,000
    users = [u for org in emu.orgs for u in org.users]
    now = SystemClock().now()
    families: dict[str, Family] = {}
    rows: list[dict[str, Any]] = []
    for n in range(count):
        user = users[n % len(users)]
        access, refresh = emu.state.issue(app, user, "api refresh_token", "127.0.0.1", refresh=True)
        cid = f"s{n:05d}"
        families[cid] = access.family
        rows.append(
            {
                **template,
                "id": cid,
                "org_id": user.org_id,
                "user_id": user.user_id,
                "username": user.username,
                "instance_url": emu.state.org_of(user).instance_url,
                **token_columns(store.keyring, cid, access.token, refresh),
                "issued_at": now - timedelta(seconds=TIMEOUT - 300),
                "expires_at": now + timedelta(seconds=300),
                "next_refresh_at": now - timedelta(seconds=1 + n % 60),
            }
        )
        if len(rows) == BATCH or n == count - 1:
            async with store.db.write() as session:
                await session.execute(insert(table), rows)
            rows = []
    await store.connections.delete(template_id)
    return families


async def _stop(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    result = await stop_scheduler_worker(proc)
    assert proc.returncode == 0
    return result


async def _wait_all_refreshed(store: Store, count: int, budget: float) -> None:
    """Until no row is left at version 1 (bounded by ``budget`` seconds)."""
    started = time.monotonic()
    query = select(func.count()).where(ConnectionRow.version == 1)
    while time.monotonic() - started < budget:
        async with store.db.read() as session:
            left = await session.scalar(query)
        if not left:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{left} of {count} connections not refreshed after {budget} s")


async def _two_schedulers_refresh_each_once(
    url: str, tmp_path: Path, keyring: Keyring, count: int
) -> None:
    clock = SystemClock()
    db = Database(url, clock=clock)
    await db.upgrade()
    await verify_keyring(db, keyring)
    store = Store(db=db, keyring=keyring, clock=clock)
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with Emulator.running(orgs=2, clock=clock) as emu, token_client(clock) as client:
            for org in emu.orgs:
                emu.admin.patch_org(org.org_id, {"session_timeout_seconds": TIMEOUT})
            await register_integration(store, emu, session_timeout_seconds=TIMEOUT)
            await connect(store, emu, client, emu.orgs[0].users[0], "template", clock=clock)
            families = await _due_connections(store, emu, count, "template")
            before = len(emu.admin.requests(grant_type="refresh_token"))
            started = clock.time()
            procs = [
                await start_scheduler_worker(
                    {
                        "db_url": url,
                        "keys": keyring.export().reveal(),
                        "owner": f"scheduler-{i}",
                        "interval": 0.5,
                        "data_dir": str(tmp_path / f"data-{i}"),
                    },
                    tmp_path / f"scheduler-{i}.log",
                )
                for i in range(2)
            ]
            await _wait_all_refreshed(store, count, budget=110)
            outputs = [await _stop(p) for p in procs]
            grants = len(emu.admin.requests(grant_type="refresh_token")) - before
            live_tokens = {cid: f.access_tokens[-1] for cid, f in families.items()}
            per_family = {cid: len(f.access_tokens) for cid, f in families.items()}
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    async with db.read() as session:
        outcomes = dict(
            (
                await session.execute(
                    select(OperationRow.outcome, func.count())
                    .where(OperationRow.kind == "refresh")
                    .group_by(OperationRow.outcome)
                )
            ).all()
        )
        checked = (await session.execute(select(ConnectionRow.__table__))).all()
    await db.close()
    assert grants == count  # the emulator saw exactly one refresh grant per connection...
    assert set(per_family.values()) == {2}  # ...one for each family: none twice, none missed
    assert outcomes == {"ok": count}  # nothing fenced, nothing failed
    assert sum(o["refreshes"] for o in outputs) == count
    assert all(o["refreshes"] > 0 for o in outputs), outputs  # both processes took work
    assert len(checked) == count
    for conn in checked:
        assert conn.version == 2
        assert conn.status == "active"
        assert conn.lease_owner is None
        access = credentials_of(keyring, conn).access_token  # type: ignore[arg-type]
        assert access.reveal() == live_tokens[conn.id]
        assert conn.expires_at is not None
        assert conn.expires_at.timestamp() >= started + TIMEOUT - 60
        assert conn.next_refresh_at is not None
        assert conn.next_refresh_at.timestamp() > started + 60


@pytest.mark.multiprocess
@pytest.mark.slow
async def test_two_scheduler_processes_refresh_10000_connections_once_each_on_postgresql(
    pg_url: str, tmp_path: Path, keyring: Keyring
) -> None:
    await _two_schedulers_refresh_each_once(pg_url, tmp_path, keyring, 10_000)


@pytest.mark.multiprocess
async def test_two_scheduler_processes_refresh_1000_connections_once_each_on_sqlite(
    tmp_path: Path, keyring: Keyring
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'tokenkeep.db'}"
    await _two_schedulers_refresh_each_once(url, tmp_path, keyring, 1000)
