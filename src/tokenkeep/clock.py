"""Time, injected.

Nothing in tokenkeep reads the time except through a :class:`Clock`. Production code uses
:class:`SystemClock`; tests and the emulator use :class:`ManualClock`, whose time only moves
when told to, or :class:`OffsetClock`, which runs with the system clock but can be pushed
forward (the emulator's ``POST /_emulator/clock/advance``). :class:`FileClock` is a
manual clock shared by several OS processes through a file (multi-process tests).
:class:`DatabaseClock` is what a production gateway runs on: the system clock corrected
to the database server's, so every gateway on one database reads the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time as _time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = [
    "Clock",
    "DatabaseClock",
    "FileClock",
    "ManualClock",
    "OffsetClock",
    "SystemClock",
    "utc_from_timestamp",
]


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


class DatabaseClock:
    """A real clock (``base``, the system clock by default) plus a ``correction`` (seconds)
    that makes it read the database server's time (:meth:`Database.clock_correction`).

    Leases (``lease_until``) and token expiries (``expires_at``) are written by one gateway
    and compared by another: with each host's own clock a gateway 5 minutes ahead takes a
    live lease over, and one 5 minutes behind serves a token that expired. Every gateway
    on one database corrected to the database's clock compares like with like. Monotonic
    time and sleeps are the base clock's.
    """

    def __init__(self, base: Clock | None = None, correction: float = 0.0) -> None:
        self._base: Clock = base if base is not None else SystemClock()
        self._correction = float(correction)

    @property
    def correction(self) -> float:
        return self._correction

    def correct(self, seconds: float) -> None:
        """Set the correction (measured against the database: ``server - base``)."""
        self._correction = float(seconds)

    def time(self) -> float:
        return self._base.time() + self._correction

    def now(self) -> datetime:
        return utc_from_timestamp(self.time())

    def monotonic(self) -> float:
        return self._base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._base.sleep(seconds)

    def __repr__(self) -> str:
        return f"DatabaseClock({self._base!r}, correction={self._correction:.3f})"


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


class FileClock:
    """A :class:`ManualClock` whose time lives in a file, so several OS processes share it.

    Multi-process tests (a stampede over 4 processes, 2 scheduler processes) need one fake
    time that every process sees move at once. The file holds the epoch seconds as text;
    :meth:`advance`/:meth:`set` replace it atomically (write + ``os.replace``) under an
    exclusive ``flock`` so concurrent advances never lose one. ``sleep`` polls the file
    every ``poll_interval`` real seconds until the shared time has passed the wake-up time,
    exactly like :class:`ManualClock` (time stands still until someone moves it).
    """

    def __init__(self, path: str | os.PathLike[str], *, poll_interval: float = 0.01) -> None:
        self._path = Path(path)
        self._poll = poll_interval
        if not self._path.exists():
            raise FileNotFoundError(f"no shared clock file at {self._path}; use FileClock.create")

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], start: float | datetime | None = None
    ) -> FileClock:
        """Write a new clock file starting at ``start`` (default: ManualClock's origin)."""
        if start is None:
            start = 1_767_225_600.0
        if isinstance(start, datetime):
            start = start.timestamp()
        target = Path(path)
        _write_atomically(target, float(start))
        return cls(target)

    @property
    def path(self) -> Path:
        return self._path

    def time(self) -> float:
        # A reader may open the file between the writer's write and rename: os.replace is
        # atomic, so it sees either the old or the new complete value, never half of one.
        return float(self._path.read_text(encoding="ascii"))

    def now(self) -> datetime:
        return utc_from_timestamp(self.time())

    def monotonic(self) -> float:
        return self.time()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._locked():
            _write_atomically(self._path, self.time() + seconds)

    def set(self, timestamp: float | datetime) -> None:
        if isinstance(timestamp, datetime):
            timestamp = timestamp.timestamp()
        with self._locked():
            if timestamp < self.time():
                raise ValueError("a clock only moves forward")
            _write_atomically(self._path, float(timestamp))

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = self.time() + seconds
        # Another process moves the time: there is no event to wait on, only the file.
        while self.time() < wake:  # noqa: ASYNC110
            await asyncio.sleep(self._poll)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return _flocked(self._path.with_name(self._path.name + ".lock"))

    def __repr__(self) -> str:
        return f"FileClock({str(self._path)!r})"


@contextlib.contextmanager
def _flocked(lock_path: Path) -> Iterator[None]:
    import fcntl

    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_atomically(path: Path, value: float) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(repr(value), encoding="ascii")
    os.replace(tmp, path)
