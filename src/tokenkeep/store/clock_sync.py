"""Keep a :class:`~tokenkeep.clock.DatabaseClock` on the database's time while the gateway
runs, not only at start.

A host clock can be stepped after start (NTP catching up after a VM resume, an operator's
``date -s``): a gateway still corrected by its start-up measurement would then read leases
and expiries minutes off, as if it had never been corrected. :class:`ClockSync` re-measures
every ``TOKENKEEP_CLOCK_SYNC_SECONDS`` (60 s by default): ``SAMPLES`` round trips, the
shortest kept (its midpoint is the least uncertain), and the correction moved by what it
shows. A step of more than ``LOG_STEP_SECONDS`` is logged as a warning (the host clock
jumped). On SQLite the database's clock is this host's: the correction stays at what
``DatabaseClock`` started with.
"""

from __future__ import annotations

import time

from tokenkeep.clock import DatabaseClock
from tokenkeep.observability.logging import get_logger
from tokenkeep.periodic import Periodic
from tokenkeep.store.database import Database

__all__ = ["ClockSync"]

_log = get_logger("tokenkeep.clock")

#: Round trips per measurement; the one with the shortest round trip is used.
SAMPLES = 3
#: A correction change larger than this (seconds) is logged as a host clock step.
LOG_STEP_SECONDS = 1.0


class ClockSync:
    """A gateway service: re-measure ``clock`` against ``db`` every ``interval`` seconds."""

    def __init__(self, db: Database, clock: DatabaseClock, interval: float) -> None:
        self._db = db
        self.clock = clock
        self._loop = Periodic("clock-sync", interval, self.sync)

    def __repr__(self) -> str:
        return f"ClockSync(correction={self.clock.correction:.3f})"

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def sync(self) -> float:
        """Measure now and apply it; returns the change of the correction (seconds).
        Raises :class:`~tokenkeep.errors.DatabaseUnavailableError` (the loop retries)."""
        samples = [await self._measure() for _ in range(SAMPLES)]
        round_trip, step = min(samples)
        self.clock.correct(self.clock.correction + step)
        if abs(step) > LOG_STEP_SECONDS:
            _log.warning(
                "clock.stepped",
                step_seconds=round(step, 3),
                correction_seconds=round(self.clock.correction, 3),
                round_trip_ms=round(round_trip * 1000, 1),
            )
        return step

    async def _measure(self) -> tuple[float, float]:
        """(round trip, measured correction change) of one query."""
        started = time.perf_counter()
        measured = await self._db.clock_correction(self.clock)
        return time.perf_counter() - started, measured
