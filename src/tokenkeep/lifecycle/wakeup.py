"""Waking the callers that wait while another process refreshes a connection.

A caller that does not get a connection's refresh lease waits until the holder's commit
moves the row's ``version`` (or the status breaks, or the lease frees or expires), then
re-reads. How it learns that:

* **PostgreSQL, notify** (the default there): the holder sends ``NOTIFY tokenkeep_refresh,
  '<connection id>'`` when its flight ends (after the commit, or after it gave the lease
  back); every process LISTENs on one dedicated connection (psycopg 3, opened at the first
  wait) and wakes its waiters for that connection at once. The row is still re-read on
  every wake-up, and every ``fallback_interval`` seconds without one: a lost notification
  (a holder killed before it could send it, the listening connection dropped) costs at
  most that long, never correctness — the lease expiry and the version compare-and-swap
  stay the safety net.
* **SQLite, or notify off**: the row is polled every ``poll_interval`` seconds (10 ms).

Registration comes before the read: a waiter registers, then peeks the row, then sleeps,
so a notification sent between its read and its sleep is never missed.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text

from tokenkeep.clock import Clock
from tokenkeep.errors import NotFoundError, TransientUpstreamError
from tokenkeep.observability.logging import get_logger
from tokenkeep.store import Store
from tokenkeep.vocabulary import Status

__all__ = ["CHANNEL", "Wakeup"]

CHANNEL = "tokenkeep_refresh"
_log = get_logger("tokenkeep.lifecycle.wakeup")
_RETRY_SECONDS = 5.0
_BROKEN = (Status.NEEDS_REAUTH, Status.ACTION_REQUIRED)


class Wakeup:
    """How this process's waiters hear that a refresh elsewhere has landed.

    ``notify``: None (default) uses LISTEN/NOTIFY on PostgreSQL and polling on SQLite;
    False always polls (the benchmark's baseline). ``poll_interval`` is the polling period,
    ``fallback_interval`` the re-read period while notifications are on.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        notify: bool | None = None,
        poll_interval: float = 0.01,
        fallback_interval: float = 0.5,
    ) -> None:
        self._store = store
        self._clock = clock
        postgres = store.db.dialect == "postgresql"
        self.enabled = postgres if notify is None else (notify and postgres)
        self.poll_interval = poll_interval
        self.fallback_interval = fallback_interval
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening: asyncio.Event | None = None
        self._retry_at = 0.0
        self.notifications = 0  # received (for tests and the benchmark)

    def __repr__(self) -> str:
        return f"Wakeup({'notify' if self.enabled else 'poll'})"

    # -- the holder's side ------------------------------------------------------------------
    async def landed(self, connection_id: str) -> None:
        """The flight on ``connection_id`` ended here: wake the waiters everywhere."""
        if not self.enabled:
            return
        try:
            async with self._store.db.write() as session:
                await session.execute(
                    text("SELECT pg_notify(:channel, :id)"),
                    {"channel": CHANNEL, "id": connection_id},
                )
        except Exception as exc:  # the waiters' fallback re-read covers a lost notification
            _log.warning("refresh notify failed", connection_id=connection_id, error=str(exc))

    # -- the waiter's side ------------------------------------------------------------------
    async def wait_for_holder(self, connection_id: str, seen_version: int, budget: float) -> None:
        """Until the row moves past ``seen_version``, breaks, or its lease frees or expires
        (at most ``budget`` seconds of real time, then ``TransientUpstreamError``)."""
        if self.enabled:
            await self._listen()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        event = asyncio.Event()
        waiters = self._waiters.setdefault(connection_id, set())
        waiters.add(event)
        try:
            while True:
                if self.listening:  # registered first, then read: no wake-up is lost
                    event.clear()
                    if await self._done(connection_id, seen_version):
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), self.fallback_interval)
                else:
                    await asyncio.sleep(self.poll_interval)
                    if await self._done(connection_id, seen_version):
                        return
                if loop.time() >= deadline:
                    raise TransientUpstreamError(
                        f"connection {connection_id}: another worker's refresh did not "
                        "finish in time"
                    )
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(connection_id, None)

    @property
    def listening(self) -> bool:
        """True while this process's LISTEN connection is up."""
        return self._listening is not None and self._listening.is_set()

    async def _done(self, connection_id: str, seen_version: int) -> bool:
        row = await self._store.refresh_state.peek(connection_id)
        if row is None:
            raise NotFoundError(f"connection {connection_id!r} does not exist")
        if row.version != seen_version or row.status in _BROKEN:
            return True
        if row.lease_owner is None or row.lease_until is None:
            return True
        return row.lease_until <= self._clock.now()

    async def _listen(self) -> None:
        """Start the listener once and wait (5 s at most) until it listens; after a
        failure, try again at most every ``_RETRY_SECONDS`` (meanwhile: polling)."""
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done():
            if loop.time() < self._retry_at:
                return
            self._retry_at = loop.time() + _RETRY_SECONDS
            self._listening = asyncio.Event()
            self._listener = asyncio.create_task(self._run(self._listening), name="refresh-listen")
        listening = self._listening
        if listening is not None and not listening.is_set():
            ready = asyncio.ensure_future(listening.wait())
            await asyncio.wait(
                {ready, self._listener}, timeout=5.0, return_when=asyncio.FIRST_COMPLETED
            )
            ready.cancel()

    async def _run(self, listening: asyncio.Event) -> None:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(
                self._store.db.libpq_url(), autocommit=True, connect_timeout=5
            )
        except Exception as exc:
            _log.warning("refresh listener unavailable, polling", error=type(exc).__name__)
            return
        try:
            await conn.execute(f"LISTEN {CHANNEL}")
            listening.set()
            async for note in conn.notifies():
                self.notifications += 1
                for event in self._waiters.get(note.payload, ()):
                    event.set()
        except Exception as exc:
            _log.warning("refresh listener lost, polling", error=type(exc).__name__)
        finally:
            listening.clear()
            with contextlib.suppress(Exception):
                await conn.close()
            for waiters in self._waiters.values():  # re-read now, then poll
                for event in waiters:
                    event.set()

    async def aclose(self) -> None:
        """Stop listening (idempotent)."""
        task, self._listener = self._listener, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
