"""A background step repeated every few seconds, until stopped (org health, log retention).

The pace is the event loop's timer (``asyncio``), not the injected clock: it is how often
a process talks to the database, not a duration of the domain. So the shared write pause
is seen by every gateway within a poll interval even when tests drive a manual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from tokenkeep.observability.logging import get_logger

__all__ = ["Periodic"]

_log = get_logger("tokenkeep.periodic")


class Periodic:
    """Run ``step`` every ``interval`` seconds in one task; a failing step is logged."""

    def __init__(self, name: str, interval: float, step: Callable[[], Awaitable[object]]) -> None:
        self.name = name
        self.interval = interval
        self._step = step
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if self._stop.is_set():
                return
            try:
                await self._step()
            except Exception as exc:  # the database away: try again next interval
                _log.warning("periodic.step_failed", step=self.name, error=repr(exc))
