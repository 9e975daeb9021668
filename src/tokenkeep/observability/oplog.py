"""The operation log's write path: a bounded in-memory queue flushed to the store in batches.

Hot paths (the proxy: one entry per call) must not wait on the database, so they hand an
entry to :meth:`OperationQueue.put`: a ``deque.append`` and nothing else. A background task
writes what has queued up, in batches, through the ``sink`` it was given (the store's
``OperationLog.insert_many``). Its rules:

* ``put`` never blocks and never raises. When ``capacity`` entries are already waiting (the
  database is slow or down), the new entry is dropped and counted: ``dropped`` grows, the
  ``on_drop`` callback (the ``tokenkeep_log_queue_dropped_total`` metric) is told, and one
  warning per overflow episode is logged. Nothing is lost silently.
* A failing flush keeps its batch at the front of the queue and retries with a growing pause
  (0.5 s doubling to 30 s), so an outage delays the log without losing what fits.
* The task wakes every ``interval_seconds``, or as soon as a full batch is waiting, and
  writes what has queued up by then; entries that arrive meanwhile wait for the next wake
  (or fill a batch), so a steady stream is written in batches of about
  ``rate * interval``, not one small batch per write's round trip.
* ``stop`` flushes what is left (bounded by ``drain_seconds``) before returning.

An entry is a plain dict of the ``operations`` columns (``kind``, ``outcome``,
``connection_id``, ``org_id``, ``cause``, ``status_code``, ``duration_ms``, ``detail``) and
``at`` as epoch seconds on the gateway's clock; the sink gets the entries as they are (it
must not change them: a failed batch is queued again). It never holds a token or a
secret: that is each writer's contract, checked by the canary tests.

The module knows nothing of the store (it sits in the foundation layer): the runtime wires
the sink.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from tokenkeep.clock import Clock
from tokenkeep.observability.logging import get_logger

__all__ = ["Entry", "OperationQueue", "Sink"]

Entry = dict[str, Any]
Sink = Callable[[list[Entry]], Awaitable[None]]

_RETRY_FIRST = 0.5
_RETRY_MAX = 30.0


class OperationQueue:
    """A bounded queue of operation-log entries and the task that flushes it."""

    def __init__(
        self,
        sink: Sink,
        *,
        clock: Clock,
        capacity: int = 10_000,
        batch_size: int = 500,
        interval_seconds: float = 0.25,
        drain_seconds: float = 5.0,
        on_drop: Callable[[], None] | None = None,
        enabled: bool = True,
    ) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be at least 1")
        self._sink = sink
        self._clock = clock
        self.capacity = capacity
        self._batch_size = batch_size
        self._interval = interval_seconds
        self._drain_seconds = drain_seconds
        self._on_drop = on_drop
        #: False (``TOKENKEEP_OPERATION_LOG=0``): ``put`` keeps nothing, nothing is written.
        self.enabled = enabled
        self._entries: deque[Entry] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._overflowing = False
        self._log = get_logger("tokenkeep.oplog")
        #: Entries refused because the queue was full, since this queue was built.
        self.dropped = 0
        #: Entries written to the sink, since this queue was built.
        self.written = 0

    def __repr__(self) -> str:
        return f"OperationQueue(depth={len(self._entries)}, dropped={self.dropped})"

    @property
    def depth(self) -> int:
        """Entries waiting to be written."""
        return len(self._entries)

    def put(self, entry: Entry) -> bool:
        """Queue ``entry`` (``at`` defaults to now); False when it was dropped (queue full)
        or the operation log is off."""
        if not self.enabled:
            return False
        if len(self._entries) >= self.capacity:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            if not self._overflowing:
                self._overflowing = True
                self._log.warning(
                    "oplog.queue_full",
                    capacity=self.capacity,
                    dropped=self.dropped,
                    hint="the database is slow or down; entries are dropped and counted",
                )
            return False
        if "at" not in entry:
            entry["at"] = self._clock.time()
        self._entries.append(entry)
        if len(self._entries) >= self._batch_size:
            self._wake.set()
        return True

    # -- the flusher (the runtime's Service protocol) ----------------------------------------

    async def start(self) -> None:
        """Start the background flush task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="tokenkeep-oplog")

    async def stop(self) -> None:
        """Stop the flush task after its batch in flight, then write what is left (for at
        most ``drain_seconds`` in all)."""
        task, self._task = self._task, None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_seconds):
                if task is not None:
                    self._stopping = True
                    self._stopped.set()
                    self._wake.set()
                    await task
                while self._entries:
                    if not await self.flush():
                        break
        if task is not None and not task.done():
            task.cancel()  # the sink hung past the drain time: its batch is re-queued
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._stopping = False
        self._stopped.clear()

    async def flush_all(self) -> bool:
        """Write everything queued now (readers call it first, to see their own process's
        entries); False when the sink failed (the rest stays queued for the flush task)."""
        while self._entries:
            if not await self.flush():
                return False
        return True

    async def flush(self) -> bool:
        """Write one batch now; False when the sink failed (the batch stays queued).

        One flush at a time: a reader's :meth:`flush_all` waits for the batch in flight.
        """
        async with self._flushing:
            return await self._flush_batch()

    async def _flush_batch(self) -> bool:
        if not self._entries:
            return True
        count = min(len(self._entries), self._batch_size)
        batch = [self._entries.popleft() for _ in range(count)]
        try:
            await self._sink(batch)
        except asyncio.CancelledError:
            self._entries.extendleft(reversed(batch))
            raise
        except Exception as exc:
            # Back at the front, oldest first; what no longer fits is dropped and counted.
            room = self.capacity - len(self._entries)
            kept = batch[:room] if room < len(batch) else batch
            lost = len(batch) - len(kept)
            self._entries.extendleft(reversed(kept))
            if lost:
                self.dropped += lost
                if self._on_drop is not None:
                    for _ in range(lost):
                        self._on_drop()
            self._log.warning("oplog.flush_failed", error=repr(exc), queued=len(self._entries))
            return False
        self.written += len(batch)
        if self._overflowing and len(self._entries) < self.capacity // 2:
            self._overflowing = False
            self._log.info("oplog.queue_recovered", dropped=self.dropped)
        return True

    async def _run(self) -> None:
        pause = _RETRY_FIRST
        while not self._stopping:
            self._wake.clear()
            if len(self._entries) < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
            # What has queued up by now goes out; what arrives during these writes waits
            # for the next interval unless it fills a batch. (Draining until empty made a
            # busy proxy write one small batch per write's round trip: ~40 rows, ~80
            # transactions a second, each paying the whole per-batch cost.)
            due = len(self._entries)
            while due > 0 and self._entries and not self._stopping:
                if await self.flush():
                    pause = _RETRY_FIRST
                    due -= self._batch_size
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stopped.wait()  # stop() ends the retry pause
                pause = min(pause * 2, _RETRY_MAX)
