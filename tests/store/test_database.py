"""tokenkeep.store.database: migrations, schema check, health, SQLite write concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, select

from tokenkeep.clock import ManualClock
from tokenkeep.errors import DatabaseUnavailableError
from tokenkeep.store import Database
from tokenkeep.store.database import rowcount
from tokenkeep.store.models import Base, OperationRow


async def test_migrated_schema_equals_the_models(database: Database) -> None:
    def _diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))

    async with database.engine.connect() as conn:
        diffs = await conn.run_sync(_diff)
    assert diffs == []


async def test_upgrade_is_idempotent_and_reported(db_url: str, clock: ManualClock) -> None:
    db = Database(db_url, clock=clock)
    try:
        assert await db.current_revision() is None
        assert not await db.schema_is_current()
        await db.upgrade()
        await db.upgrade()
        assert await db.schema_is_current()
        assert await db.current_revision() == Database.head_revision()
        await db.ping()
    finally:
        await db.close()


async def test_concurrent_upgrades_from_several_engines(db_url: str, clock: ManualClock) -> None:
    engines = [Database(db_url, clock=clock) for _ in range(3)]
    try:
        await asyncio.gather(*(db.upgrade() for db in engines))
        assert all([await db.schema_is_current() for db in engines])
    finally:
        for db in engines:
            await db.close()


async def test_unreachable_postgres_is_unavailable_without_password(clock: ManualClock) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    db = Database(
        "postgresql+psycopg://tk:hunter2-secret@127.0.0.1:9/tk", clock=clock, connect_timeout=1
    )
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            await db.ping()
        assert "hunter2-secret" not in info.value.message
        assert "127.0.0.1:9" in info.value.message
        with pytest.raises(DatabaseUnavailableError):
            async with db.read() as session:
                await session.execute(select(1))
    finally:
        await db.close()


async def _add_then_fail(database: Database, clock: ManualClock) -> None:
    async with database.write() as session:
        session.add(OperationRow(at=clock.now(), kind="proxy", outcome="ok", detail={"n": 1}))
        await session.flush()
        raise RuntimeError("boom")


async def _add_naive(database: Database) -> None:
    async with database.write() as session:
        session.add(OperationRow(at=datetime(2026, 1, 1), kind="x", outcome="ok", detail={}))


async def test_write_rolls_back_on_error(database: Database, clock: ManualClock) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        await _add_then_fail(database, clock)
    async with database.read() as session:
        assert await session.scalar(select(func.count()).select_from(OperationRow)) == 0


async def test_datetimes_round_trip_aware_utc(database: Database) -> None:
    local = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with database.write() as session:
        session.add(OperationRow(at=local, kind="refresh", outcome="ok", detail={}))
    async with database.read() as session:
        at = await session.scalar(select(OperationRow.at))
    assert at == local
    assert at is not None
    assert at.utcoffset() == timedelta(0)
    with pytest.raises(Exception, match="naive datetime"):
        await _add_naive(database)


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from tokenkeep.clock import SystemClock
    from tokenkeep.store import Database
    from tokenkeep.store.models import OperationRow
    from sqlalchemy import select, func

    async def main(url, tag, n):
        db = Database(url, clock=SystemClock())
        clock = SystemClock()
        for i in range(n):
            # read-then-write in one transaction: the pattern that fails with
            # "database is locked" under a deferred BEGIN.
            async with db.write() as s:
                count = await s.scalar(select(func.count()).select_from(OperationRow))
                s.add(OperationRow(at=clock.now(), kind=tag, outcome="ok",
                                   detail={"seen": count, "i": i}))
        await db.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


@pytest.mark.multiprocess
async def test_sqlite_writers_in_two_processes_never_see_database_locked(
    tmp_path: Path, clock: ManualClock
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    db = Database(url, clock=clock)
    await db.upgrade()
    n = 60
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, f"w{i}", str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert b"database is locked" not in err
        assert proc.returncode == 0, err.decode()[-2000:]
    async with db.read() as session:
        rows = (await session.execute(select(OperationRow.kind, OperationRow.detail))).all()
    await db.close()
    assert len(rows) == 2 * n
    # Serialized: every transaction saw a distinct count of earlier rows.
    assert sorted(detail["seen"] for _, detail in rows) == list(range(2 * n))


async def test_postgres_pool_recovers_after_connections_are_killed(
    pg_url: str, pg_admin_dsn: str, clock: ManualClock
) -> None:
    """A server restart drops every pooled connection; the next request must just work."""
    db = Database(pg_url, clock=clock, pool_size=3)
    try:
        await db.upgrade()
        await asyncio.gather(*(db.ping() for _ in range(3)))  # fill the pool
        name = pg_url.rsplit("/", 1)[1]
        with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchone()
        assert killed is not None
        assert killed[0] >= 1
        for _ in range(3):
            async with db.read() as session:
                assert await session.scalar(select(1)) == 1
        assert await db.schema_is_current()
    finally:
        await db.close()


def test_unusable_sqlite_path_is_a_clear_unavailable_error(
    tmp_path: Path, clock: ManualClock
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(DatabaseUnavailableError, match="is unavailable"):
        Database(f"sqlite+aiosqlite:///{blocker / 'sub' / 'tokenkeep.db'}", clock=clock)


def test_rowcount_reads_the_cursor_count_or_zero() -> None:
    class _Counted:
        def __init__(self, count: int | None) -> None:
            self.rowcount = count

    assert rowcount(_Counted(2)) == 2
    assert rowcount(_Counted(None)) == 0
    assert rowcount(object()) == 0
