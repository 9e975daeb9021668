"""The refresh lease: which worker (in any process, on any host) may refresh a connection now.

The lease lives on the connection row (``lease_owner``, ``lease_until``) and is taken by a
conditional ``UPDATE`` in a short write transaction: free or expired → ours. On PostgreSQL
the row is read ``FOR UPDATE`` first (the row lock orders two takers); on SQLite the write
transaction is ``BEGIN IMMEDIATE``, which serialises writers across processes.

The lease is a *liveness* device, not the safety one: while the token endpoint call is in
flight a :class:`LeaseHeartbeat` keeps extending it, so a slow provider never lets a second
worker in; if a worker stalls anyway (a paused VM, a GC storm) and its lease expires, the
compare-and-swap on ``version`` (see :mod:`tokenkeep.lifecycle.persist`) rejects its late
write. Times are the injected clock's, shared by every gateway instance.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, select, update

from tokenkeep.clock import Clock
from tokenkeep.observability.logging import get_logger
from tokenkeep.store.database import Database
from tokenkeep.store.models import ConnectionRow

__all__ = [
    "CLAIM_PREFIX",
    "LeaseGrant",
    "LeaseHeartbeat",
    "acquire_lease",
    "claim_owner",
    "release_lease",
    "renew_lease",
]

_log = get_logger("tokenkeep.lifecycle.lease")
_T = cast(Table, ConnectionRow.__table__)
CLAIM_PREFIX = "claim:"


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The outcome of one attempt to take the lease.

    ``took_over_expired`` is true when another owner held the lease and it had expired: that
    worker may have consumed (rotated) the refresh token and died before committing it, which
    is what makes a following ``invalid_grant`` a ``rotation_lost``.
    """

    acquired: bool
    holder: str | None
    until: datetime | None
    took_over_expired: bool = False


def claim_owner(owner: str) -> str:
    """The lease owner the scheduler writes when it claims a row for ``owner``.

    A claim reserves the row before any token-endpoint call: if it expires (the scheduler
    died or fell behind), whoever takes over knows no refresh token was consumed.
    """
    return CLAIM_PREFIX + owner


async def acquire_lease(
    db: Database, connection_id: str, owner: str, *, now: datetime, seconds: float
) -> LeaseGrant:
    """Take the lease if it is free, expired, already ours, or claimed by our scheduler
    (one short write transaction)."""
    until = now + timedelta(seconds=seconds)
    ours = (owner, claim_owner(owner))
    async with db.write() as session:
        query = select(_T.c.lease_owner, _T.c.lease_until).where(_T.c.id == connection_id)
        if db.dialect == "postgresql":
            query = query.with_for_update()
        row = (await session.execute(query)).one_or_none()
        if row is None:
            return LeaseGrant(acquired=False, holder=None, until=None)
        holder, holder_until = row
        held_by_other = holder is not None and holder not in ours
        if held_by_other and holder_until is not None and holder_until > now:
            return LeaseGrant(acquired=False, holder=holder, until=holder_until)
        # The WHERE repeats the check so the statement is safe even without the row lock.
        result = await session.execute(
            update(_T)
            .where(_T.c.id == connection_id)
            .where(
                (_T.c.lease_owner.is_(None))
                | (_T.c.lease_owner.in_(ours))
                | (_T.c.lease_until.is_(None))
                | (_T.c.lease_until <= now)
            )
            .values(lease_owner=owner, lease_until=until)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return LeaseGrant(acquired=False, holder=holder, until=holder_until)
    # Only a refresh lease that died matters: its holder may have consumed the token.
    took_over = held_by_other and not str(holder).startswith(CLAIM_PREFIX)
    if took_over:
        _log.warning(
            "took over an expired refresh lease",
            connection_id=connection_id,
            previous_owner=holder,
        )
    return LeaseGrant(acquired=True, holder=owner, until=until, took_over_expired=took_over)


async def renew_lease(
    db: Database, connection_id: str, owner: str, *, now: datetime, seconds: float
) -> bool:
    """Extend our lease; False when it is no longer ours (taken over, or released)."""
    async with db.write() as session:
        result = await session.execute(
            update(_T)
            .where(_T.c.id == connection_id, _T.c.lease_owner == owner)
            .values(lease_until=now + timedelta(seconds=seconds))
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release_lease(db: Database, connection_id: str, owner: str) -> None:
    """Give the lease back if we still hold it (a no-op after a commit cleared it)."""
    async with db.write() as session:
        await session.execute(
            update(_T)
            .where(_T.c.id == connection_id, _T.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )


class LeaseHeartbeat:
    """Keeps a lease alive while the token-endpoint call is in flight.

    Renews every ``interval`` real seconds (a third of the lease by default). It is stopped,
    never cancelled, so a renewal that is mid-transaction finishes cleanly. ``lost`` turns
    true if a renewal finds the lease gone: the late write will then be fenced off by the
    version check, which is the safety net this heartbeat is not.
    """

    def __init__(
        self,
        db: Database,
        connection_id: str,
        owner: str,
        *,
        clock: Clock,
        seconds: float,
        interval: float | None = None,
    ) -> None:
        self._db = db
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
                held = await renew_lease(
                    self._db,
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
