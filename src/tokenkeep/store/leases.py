"""The refresh lease columns of a connection row: which worker may refresh it now.

The lease lives on the row (``lease_owner``, ``lease_until``) and is taken by a
conditional ``UPDATE`` in a short write transaction: free or expired → ours. On PostgreSQL
the row is read ``FOR UPDATE`` first (the row lock orders two takers); on SQLite the write
transaction is ``BEGIN IMMEDIATE``, which serialises writers across processes. A row
already ours (or claimed by our scheduler) is taken by that one ``UPDATE`` alone, no read.

A lease owned by ``claim:<owner>`` is a scheduler claim: it reserves the row before any
token-endpoint call, so whoever takes an expired claim over knows no refresh token was
consumed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, Update, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.store.database import Database, is_unavailable, rowcount
from tokenkeep.store.models import ConnectionRow
from tokenkeep.store.records import LeaseGrant

__all__ = ["CLAIM_PREFIX", "LeaseRepository", "claim_owner"]

_T = cast(Table, ConnectionRow.__table__)
CLAIM_PREFIX = "claim:"


def claim_owner(owner: str) -> str:
    """The lease owner the scheduler writes when it claims a row for ``owner``."""
    return CLAIM_PREFIX + owner


def _take_ours(connection_id: str, ours: tuple[str, str], until: datetime) -> Update:
    """The fast path of a take: the row is already ours, or claimed by our scheduler (the
    scheduler's every refresh), so one ``UPDATE`` turns it into our refresh lease -- no
    read first, and nothing was taken over."""
    return (
        update(_T)
        .where(_T.c.id == connection_id, _T.c.lease_owner.in_(ours))
        .values(lease_owner=ours[0], lease_until=until)
    )


class LeaseRepository:
    """Take, renew and give back a connection's refresh lease."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def acquire(
        self, connection_id: str, owner: str, *, now: datetime, seconds: float
    ) -> LeaseGrant:
        """Take the lease if it is free, expired, already ours, or claimed by our scheduler
        (one short write transaction)."""
        until = now + timedelta(seconds=seconds)
        ours = (owner, claim_owner(owner))
        async with self._db.write() as session:
            if rowcount(await session.execute(_take_ours(connection_id, ours, until))) == 1:
                return LeaseGrant(acquired=True, holder=owner, until=until)
            query = select(_T.c.lease_owner, _T.c.lease_until).where(_T.c.id == connection_id)
            if self._db.dialect == "postgresql":
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
            if rowcount(result) != 1:
                return LeaseGrant(acquired=False, holder=holder, until=holder_until)
        # Only a refresh lease that died matters: its holder may have consumed the token.
        took_over = held_by_other and not str(holder).startswith(CLAIM_PREFIX)
        return LeaseGrant(acquired=True, holder=owner, until=until, took_over_expired=took_over)

    async def renew(self, connection_id: str, owner: str, *, now: datetime, seconds: float) -> bool:
        """Extend our lease; False when it is no longer ours (taken over, or released)."""
        async with self._db.write() as session:
            result = await session.execute(
                update(_T)
                .where(_T.c.id == connection_id, _T.c.lease_owner == owner)
                .values(lease_until=now + timedelta(seconds=seconds))
            )
            return rowcount(result) == 1

    def acquire_blocking(
        self, connection_id: str, owner: str, *, now: datetime, seconds: float
    ) -> LeaseGrant:
        """:meth:`acquire` on the database's blocking engine (the heartbeat's thread takes
        the lease and keeps it from the same thread). Raises the driver's error."""
        until = now + timedelta(seconds=seconds)
        ours = (owner, claim_owner(owner))
        with self._db.blocking_engine().begin() as conn:
            if rowcount(conn.execute(_take_ours(connection_id, ours, until))) == 1:
                return LeaseGrant(acquired=True, holder=owner, until=until)
            query = select(_T.c.lease_owner, _T.c.lease_until).where(_T.c.id == connection_id)
            if self._db.dialect == "postgresql":
                query = query.with_for_update()
            row = conn.execute(query).one_or_none()
            if row is None:
                return LeaseGrant(acquired=False, holder=None, until=None)
            holder, holder_until = row
            held_by_other = holder is not None and holder not in ours
            if held_by_other and holder_until is not None and holder_until > now:
                return LeaseGrant(acquired=False, holder=holder, until=holder_until)
            result = conn.execute(
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
            if rowcount(result) != 1:
                return LeaseGrant(acquired=False, holder=holder, until=holder_until)
        took_over = held_by_other and not str(holder).startswith(CLAIM_PREFIX)
        return LeaseGrant(acquired=True, holder=owner, until=until, took_over_expired=took_over)

    def unavailable(self, exc: Exception) -> Exception:
        """What the async methods would raise for ``exc``: a driver failure becomes
        ``DatabaseUnavailableError`` (password masked); anything else stays itself."""
        return self._db.unavailable(exc) if is_unavailable(exc) else exc

    def renew_blocking(
        self, connection_id: str, owner: str, *, now: datetime, seconds: float
    ) -> bool:
        """:meth:`renew` on the database's blocking engine, for a thread of its own (the
        heartbeat must not depend on the event loop). Raises the driver's error."""
        with self._db.blocking_engine().begin() as conn:
            result = conn.execute(
                update(_T)
                .where(_T.c.id == connection_id, _T.c.lease_owner == owner)
                .values(lease_until=now + timedelta(seconds=seconds))
            )
            return rowcount(result) == 1

    async def release(
        self, connection_id: str, owner: str, *, session: AsyncSession | None = None
    ) -> None:
        """Give the lease back if we still hold it (a no-op after a commit cleared it);
        inside ``session`` when given."""
        statement = (
            update(_T)
            .where(_T.c.id == connection_id, _T.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        if session is not None:
            await session.execute(statement)
            return
        async with self._db.write() as own:
            await own.execute(statement)
