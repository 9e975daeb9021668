"""A gateway on PostgreSQL keeps its clock on the database's time after a host clock step
(store/clock_sync.py), not only at start."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tokenkeep.clock import DatabaseClock, OffsetClock
from tokenkeep.config import load_settings
from tokenkeep.runtime import Gateway
from tokenkeep.store.clock_sync import ClockSync
from tokenkeep.store.database import Database


def _off_by(clock: DatabaseClock) -> float:
    """How far the clock reads from the database's (PostgreSQL here on this host)."""
    return clock.time() - time.time()


async def test_a_host_clock_stepped_after_start_is_corrected_again(
    pg_url: str, tmp_path: Path
) -> None:
    host = OffsetClock(-300.0)  # this host's clock: 5 minutes behind the database's
    clock = DatabaseClock(host)
    settings = load_settings(
        database_url=pg_url,
        data_dir=tmp_path / "data",
        scheduler_enabled=False,
        webhooks_enabled=False,
        clock_sync_seconds=0.1,
    )
    gateway = Gateway(settings, clock=clock)
    await gateway.start()
    try:
        assert abs(_off_by(clock)) < 0.5  # corrected at start
        host.advance(600.0)  # NTP steps the host clock 10 minutes forward
        assert _off_by(clock) > 500
        for _ in range(300):  # bounded: 3 s
            if abs(_off_by(clock)) < 0.5:
                break
            await asyncio.sleep(0.01)
        assert abs(_off_by(clock)) < 0.5
    finally:
        await gateway.stop()


async def test_one_sync_applies_the_measured_step(pg_url: str) -> None:
    clock = DatabaseClock(OffsetClock(42.0))
    db = Database(pg_url, clock=clock)
    try:
        sync = ClockSync(db, clock, interval=60)
        step = await sync.sync()
        assert abs(step + 42.0) < 0.5
        assert abs(_off_by(clock)) < 0.5
        assert abs(await sync.sync()) < 0.5  # nothing moved since
        shown = repr(sync)
        assert shown.startswith("ClockSync(correction=")
        assert abs(float(shown.removeprefix("ClockSync(correction=").rstrip(")")) + 42.0) < 0.5
    finally:
        await db.close()
