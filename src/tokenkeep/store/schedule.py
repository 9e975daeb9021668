"""The scheduler's queries: which connections are due, claimed in batches.

A claim is ONE statement (``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING``): on
PostgreSQL the inner select locks with ``FOR UPDATE SKIP LOCKED`` so N gateway instances
take disjoint batches without waiting on each other; on SQLite the ``BEGIN IMMEDIATE``
write transaction serialises claimers. It takes each row's lease as ``claim:<owner>``
(:func:`~tokenkeep.store.leases.claim_owner`). Index used: ``ix_connections_due``
(:func:`due_query` is the statement ``EXPLAIN`` is shown for in docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, Select, Table, and_, func, select, text, update

from tokenkeep.store.database import Database
from tokenkeep.store.models import ConnectionRow, IntegrationRow
from tokenkeep.vocabulary import AuthMode, Status

__all__ = ["DueConnection", "ScheduleRepository", "due_filter", "due_query"]

_T = cast(Table, ConnectionRow.__table__)
_I = cast(Table, IntegrationRow.__table__)
_DUE_STATUSES = (Status.ACTIVE.value, Status.ERROR.value)
# Rows the scheduler can refresh: JWT bearer / client credentials mint again; an oauth2 row
# needs a refresh token. An oauth2 import without one is left alone: its token works until
# its expiry, and only then does a caller learn it needs a new connect (no_refresh_token).
_REFRESHABLE = _T.c.refresh_token_enc.is_not(None) | _T.c.integration_key.in_(
    select(_I.c.key).where(_I.c.auth_mode != AuthMode.OAUTH2.value)
)


# The statuses as literal SQL, the very predicate of the partial index ``ix_connections_due``
# (a bound parameter could not prove a prepared, generic plan may use it).
_DUE_LITERAL = text(f"connections.status IN ({', '.join(repr(s) for s in _DUE_STATUSES)})")


def due_filter(now: datetime) -> ColumnElement[bool]:
    """The rows whose proactive refresh is due at ``now`` (the scheduler's backlog)."""
    return and_(_T.c.status.in_(_DUE_STATUSES), _T.c.next_refresh_at <= now, _REFRESHABLE)


def due_query(
    now: datetime, limit: int, *, skip_orgs: Sequence[str] = (), locking: bool = False
) -> Select[tuple[str]]:
    """The ids a claim takes: due, refreshable, no live lease, oldest first (``locking``:
    ``FOR UPDATE SKIP LOCKED``, PostgreSQL). Served by the partial index ``ix_connections_due``
    (migration 0006): read in order, it stops at ``limit``."""
    query = (
        select(_T.c.id)
        .where(
            _DUE_LITERAL,
            _T.c.next_refresh_at <= now,
            (_T.c.lease_owner.is_(None)) | (_T.c.lease_until <= now),
            _REFRESHABLE,
        )
        .order_by(_T.c.next_refresh_at)
        .limit(limit)
    )
    if skip_orgs:
        query = query.where(_T.c.org_id.not_in(list(skip_orgs)))
    return query.with_for_update(skip_locked=True) if locking else query


@dataclass(frozen=True, slots=True)
class DueConnection:
    """A claimed row: refresh it unless its version has moved."""

    id: str
    version: int
    org_id: str


class ScheduleRepository:
    """Plan, claim and release the scheduler's rows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def oldest_due(self, now: datetime) -> datetime | None:
        """The ``next_refresh_at`` of the most overdue refreshable row, if any."""
        async with self._db.read() as session:
            return await session.scalar(
                select(func.min(_T.c.next_refresh_at)).where(due_filter(now))
            )

    async def plan_unplanned(
        self,
        limit: int,
        plan: Callable[[datetime | None, datetime | None], datetime],
    ) -> int:
        """Give up to ``limit`` rows without ``next_refresh_at`` (imports) the time
        ``plan(expires_at, issued_at)`` returns. Returns how many were planned."""
        async with self._db.write() as session:
            query = (
                select(_T.c.id, _T.c.expires_at, _T.c.issued_at)
                .where(_T.c.status.in_(_DUE_STATUSES), _T.c.next_refresh_at.is_(None), _REFRESHABLE)
                .limit(limit)
            )
            if self._db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).all()
            for row in rows:
                await session.execute(
                    update(_T)
                    .where(_T.c.id == row.id, _T.c.next_refresh_at.is_(None))
                    .values(next_refresh_at=plan(row.expires_at, row.issued_at))
                )
        return len(rows)

    async def claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        owner: str,
        seconds: float,
        skip_orgs: Sequence[str] = (),
    ) -> list[DueConnection]:
        """Claim up to ``limit`` due rows (no live lease, org not in ``skip_orgs``) for
        ``owner`` (a ``claim:`` lease owner) for ``seconds``."""
        # One statement: the due rows' ids (oldest first; on PostgreSQL locked with SKIP
        # LOCKED, so two claimers never wait on each other or take the same row), and the
        # claim written on exactly those rows, RETURNING what was claimed.
        due = due_query(now, limit, skip_orgs=skip_orgs, locking=self._db.dialect == "postgresql")
        claim = (
            update(_T)
            .where(_T.c.id.in_(due))
            .values(lease_owner=owner, lease_until=now + timedelta(seconds=seconds))
            .returning(_T.c.id, _T.c.version, _T.c.org_id)
        )
        async with self._db.write() as session:
            rows = [DueConnection(r.id, r.version, r.org_id) for r in await session.execute(claim)]
        return rows

    async def release_claims(self, connection_ids: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s claims on these rows (skipped, failed early)."""
        async with self._db.write() as session:
            await session.execute(
                update(_T)
                .where(_T.c.id.in_(list(connection_ids)), _T.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    async def requeue(self, connection_id: str, version: int, *, now: datetime) -> None:
        """Give a claimed row back, due again at ``now`` (its org is backing off)."""
        async with self._db.write() as session:
            await session.execute(
                update(_T)
                .where(_T.c.id == connection_id, _T.c.version == version)
                .values(next_refresh_at=now, lease_owner=None, lease_until=None)
            )
