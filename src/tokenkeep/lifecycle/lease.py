"""Keeping the refresh lease alive while the token call is in flight.

The lease itself (``lease_owner``, ``lease_until`` on the connection row, taken by a
conditional ``UPDATE``) is the store's: :class:`~tokenkeep.store.leases.LeaseRepository`.
It is a *liveness* device, not the safety one: while the token endpoint call is in flight
a :class:`LeaseHeartbeat` keeps extending it from its own thread, so neither a slow
provider nor a lagging event loop lets a second worker in; if a worker stalls anyway (a
paused VM, a GC storm) and its lease expires, the
compare-and-swap on ``version`` (:func:`~tokenkeep.lifecycle.persist.commit_refresh`)
rejects its late write. Times are the injected clock's, shared by every gateway instance.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from tokenkeep.clock import Clock
from tokenkeep.observability.logging import get_logger
from tokenkeep.store.leases import CLAIM_PREFIX, LeaseRepository, claim_owner
from tokenkeep.store.records import LeaseGrant

__all__ = ["CLAIM_PREFIX", "LeaseGrant", "LeaseHeartbeat", "claim_owner"]

_log = get_logger("tokenkeep.lifecycle.lease")


class LeaseHeartbeat:
    """Keeps a lease alive while the token-endpoint call (and its commit) is in flight.

    Renews every ``interval`` real seconds (a third of the lease by default) from a thread
    of its own, on the database's blocking engine (its own connection): a starved or
    lagging event loop -- CPU starvation, a long synchronous step, thousands of callers --
    cannot delay a renewal, so a live holder's lease is never taken over, even when the
    lease is shorter than the token call's timeout. While renewals fail (the database is
    away) it retries every ``interval / 4``. It is stopped, never cancelled, so a renewal
    that is mid-transaction finishes cleanly. ``lost`` turns true if a renewal finds the
    lease gone: the late write will then be fenced off by the version check, which is the
    safety net this heartbeat is not.
    """

    def __init__(
        self,
        leases: LeaseRepository,
        connection_id: str,
        owner: str,
        *,
        clock: Clock,
        seconds: float,
        interval: float | None = None,
    ) -> None:
        self._leases = leases
        self._connection_id = connection_id
        self._owner = owner
        self._clock = clock
        self._seconds = seconds
        self._interval = interval if interval is not None else seconds / 3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.renewals = 0

    async def acquire(self) -> LeaseGrant:
        """Take the lease FROM the heartbeat's thread and, when it is granted, keep renewing
        it from there at once: no step of the event loop lies between taking the lease and
        keeping it (the time of the lease is read in the thread, right before the write)."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[LeaseGrant] = loop.create_future()

        def deliver(grant: LeaseGrant | None, error: BaseException | None) -> None:
            if answer.done():
                return
            if error is not None:
                answer.set_exception(error)
            elif grant is not None:
                answer.set_result(grant)

        def take() -> bool:
            try:
                grant = self._leases.acquire_blocking(
                    self._connection_id, self._owner, now=self._clock.now(), seconds=self._seconds
                )
            except Exception as exc:
                loop.call_soon_threadsafe(deliver, None, self._leases.unavailable(exc))
                return False
            loop.call_soon_threadsafe(deliver, grant, None)
            return grant.acquired

        self._start(take)
        try:
            return await answer
        except BaseException:
            self._stop.set()  # cancelled while the thread took it: it gives it up at once
            raise

    async def __aenter__(self) -> LeaseHeartbeat:
        self._start(None)
        return self

    def _start(self, first: Callable[[], bool] | None) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(first,), name=f"lease:{self._connection_id}", daemon=True
        )
        self._thread.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop renewing (idempotent); waits (without blocking the loop) for a renewal in
        progress to finish."""
        self._stop.set()
        thread, self._thread = self._thread, None
        while thread is not None and thread.is_alive():  # noqa: ASYNC110 - a thread, not a task
            await asyncio.sleep(0.005)

    def _run(self, first: Callable[[], bool] | None) -> None:
        if first is not None and not first():
            return
        failing = False
        while not self._stop.wait(self._interval / 4 if failing else self._interval):
            try:
                held = self._leases.renew_blocking(
                    self._connection_id,
                    self._owner,
                    now=self._clock.now(),
                    seconds=self._seconds,
                )
            except Exception as exc:
                # A database blip: keep trying; the CAS protects correctness meanwhile.
                if not failing:
                    _log.warning(
                        "lease renewal failed", connection_id=self._connection_id, error=str(exc)
                    )
                failing = True
                continue
            failing = False
            if not held:
                self.lost = True
                if not self._stop.is_set():
                    _log.warning("refresh lease lost", connection_id=self._connection_id)
                return
            self.renewals += 1
