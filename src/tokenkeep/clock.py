"""Time, injected.

Nothing in tokenkeep reads the time except through a :class:`Clock`. Production code uses
:class:`SystemClock`; tests and the emulator use :class:`ManualClock`, whose time only moves
when told to, or :class:`OffsetClock`, which runs with the system clock but can be pushed
forward (the emulator's ``POST /_emulator/clock/advance``).
"""

from __future__ import annotations

import asyncio
import threading
import time as _time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "OffsetClock", "SystemClock", "utc_from_timestamp"]


def utc_from_timestamp(seconds: float) -> datetime:
    """An aware UTC datetime from epoch seconds."""
    return datetime.fromtimestamp(seconds, tz=UTC)


@runtime_checkable
class Clock(Protocol):
    """What the rest of the code may ask about time."""

    def time(self) -> float:
        """Epoch seconds (wall clock; may be moved by tests)."""

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never goes backwards (for timeouts)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return _time.time()

    def now(self) -> datetime:
        return datetime.now(tz=UTC)

    def monotonic(self) -> float:
        return _time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class OffsetClock:
    """The system clock plus an offset that only grows (``advance``).

    Real time keeps flowing, so timeouts and sleeps behave normally, while tests can jump
    hours ahead. Thread-safe: the emulator may be driven from another thread.
    """

    def __init__(self, offset: float = 0.0) -> None:
        self._offset = float(offset)
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._offset += seconds

    def time(self) -> float:
        return _time.time() + self._offset

    def now(self) -> datetime:
        return utc_from_timestamp(self.time())

    def monotonic(self) -> float:
        return _time.monotonic() + self._offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return f"OffsetClock(offset={self._offset:.3f})"


class ManualClock:
    """A clock that stands still until ``advance`` or ``set`` moves it.

    ``sleep`` returns as soon as the clock has been advanced past the wake-up time, so code
    that sleeps on this clock can be driven step by step from a test.
    """

    def __init__(self, start: float | datetime | None = None) -> None:
        if start is None:
            start = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a fixed, readable origin
        if isinstance(start, datetime):
            start = start.timestamp()
        self._now = float(start)
        self._lock = threading.Lock()
        self._waiters: list[tuple[float, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._now

    def now(self) -> datetime:
        return utc_from_timestamp(self._now)

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        self.set(self._now + seconds)

    def set(self, timestamp: float | datetime) -> None:
        if isinstance(timestamp, datetime):
            timestamp = timestamp.timestamp()
        with self._lock:
            if timestamp < self._now:
                raise ValueError("a clock only moves forward")
            self._now = float(timestamp)
            due = [w for w in self._waiters if w[0] <= self._now]
            self._waiters = [w for w in self._waiters if w[0] > self._now]
        for _, fut in due:
            loop = fut.get_loop()
            loop.call_soon_threadsafe(_resolve, fut)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.append((self._now + seconds, fut))
        await fut

    def __repr__(self) -> str:
        return f"ManualClock({self.now().isoformat()})"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
