"""Keeping the refresh lease alive while the token call is in flight.

The lease itself (``lease_owner``, ``lease_until`` on the connection row, taken by a
conditional ``UPDATE``) is the store's: :class:`~tokenkeep.store.leases.LeaseRepository`.
It is a *liveness* device, not the safety one: while the token endpoint call is in flight
a :class:`LeaseHeartbeat` keeps extending it, so a slow provider never lets a second
worker in; if a worker stalls anyway (a paused VM, a GC storm) and its lease expires, the
compare-and-swap on ``version`` (:func:`~tokenkeep.lifecycle.persist.commit_refresh`)
rejects its late write. Times are the injected clock's, shared by every gateway instance.
"""

from __future__ import annotations

import asyncio
import contextlib

from tokenkeep.clock import Clock
from tokenkeep.observability.logging import get_logger
from tokenkeep.store.leases import CLAIM_PREFIX, LeaseRepository, claim_owner
from tokenkeep.store.records import LeaseGrant

__all__ = ["CLAIM_PREFIX", "LeaseGrant", "LeaseHeartbeat", "claim_owner"]

_log = get_logger("tokenkeep.lifecycle.lease")


class LeaseHeartbeat:
    """Keeps a lease alive while the token-endpoint call is in flight.

    Renews every ``interval`` real seconds (a third of the lease by default). It is stopped,
    never cancelled, so a renewal that is mid-transaction finishes cleanly. ``lost`` turns
    true if a renewal finds the lease gone: the late write will then be fenced off by the
    version check, which is the safety net this heartbeat is not.
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
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lost = False
        self.renewals = 0

    async def __aenter__(self) -> LeaseHeartbeat:
        self._task = asyncio.create_task(self._run(), name=f"lease-heartbeat:{self._owner}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop renewing (idempotent); waits for a renewal in progress to finish."""
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(Exception):
                await task

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._interval)
            if self._stop.is_set():
                return
            try:
                held = await self._leases.renew(
                    self._connection_id,
                    self._owner,
                    now=self._clock.now(),
                    seconds=self._seconds,
                )
            except Exception as exc:
                # A database blip: keep trying; the CAS protects correctness meanwhile.
                _log.warning(
                    "lease renewal failed", connection_id=self._connection_id, error=str(exc)
                )
                continue
            if not held:
                self.lost = True
                _log.warning("refresh lease lost", connection_id=self._connection_id)
                return
            self.renewals += 1
