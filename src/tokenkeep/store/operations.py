"""The operation log: append (in the writer's transaction, or in batches from the queue),
query (filters, keyset pages, tails) and prune.

The webhook outbox is :mod:`tokenkeep.store.outbox` (re-exported here for its importers).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database
from tokenkeep.store.models import OperationRow
from tokenkeep.store.operation_rows import pg_rows, sqlite_batch
from tokenkeep.store.outbox import STANDARD_KEYS, Outbox, standard_payload
from tokenkeep.store.records import Operation
from tokenkeep.vocabulary import Reason

__all__ = [
    "STANDARD_KEYS",
    "LogPage",
    "LogQuery",
    "OperationLog",
    "Outbox",
    "parse_status",
    "standard_payload",
]

MAX_LOG_PAGE = 1000
_STATUS = re.compile(r"^(?:([1-5])xx|([1-5]\d\d))$")


class OperationLog:
    """Append and query the operation log (every refresh, proxied call, connect, webhook)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def log(
        self,
        kind: str,
        *,
        outcome: str,
        connection_id: str | None = None,
        org_id: str | None = None,
        cause: str | None = None,
        status_code: int | None = None,
        duration_ms: float | None = None,
        detail: dict[str, Any] | None = None,
        session: AsyncSession | None = None,
    ) -> None:
        """Append one entry; inside ``session`` when given (same transaction), else alone.

        ``detail`` is stored as JSON: never put a token or secret in it.
        """
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(self._db.write())
            self.add(
                session,
                kind,
                outcome=outcome,
                connection_id=connection_id,
                org_id=org_id,
                cause=cause,
                status_code=status_code,
                duration_ms=duration_ms,
                detail=detail,
            )

    def add(
        self,
        session: AsyncSession,
        kind: str,
        *,
        outcome: str,
        connection_id: str | None = None,
        org_id: str | None = None,
        cause: str | None = None,
        status_code: int | None = None,
        duration_ms: float | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry inside ``session`` (a :meth:`Database.write` session)."""
        session.add(
            OperationRow(
                at=self._clock.now(),
                kind=kind,
                connection_id=connection_id,
                org_id=org_id,
                outcome=outcome,
                cause=cause,
                status_code=status_code,
                duration_ms=duration_ms,
                detail=dict(detail or {}),
            )
        )

    def status_changed(
        self,
        session: AsyncSession,
        connection_id: str,
        org_id: str | None,
        *,
        previous: str | None,
        status: str,
        reason: str | None,
        by: str,
    ) -> None:
        """The ``status`` entry of a connection's status change (``by``: what changed it:
        ``refresh``, ``diagnosis``, ...), in the transaction of the change."""
        self.add(
            session,
            "status",
            outcome=status,
            connection_id=connection_id,
            org_id=org_id,
            cause=_cause_of(reason),
            detail={"from": previous, "to": status, "reason": reason, "by": by},
        )

    async def insert_many(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append many entries in one transaction (the operation queue's flush).

        Each entry maps the columns (``at`` an aware datetime or epoch seconds, ``kind``,
        ``outcome`` and the optional ones); missing optional columns are stored as NULL.
        This is the write path of every proxied call, so it talks to the driver directly
        (about half the CPU of an ORM or Core insert, docs/PERFORMANCE.md): ``COPY`` on
        PostgreSQL; on SQLite one ``INSERT ... SELECT`` over ``json_each`` of the whole
        batch sent as one JSON array (:mod:`tokenkeep.store.operation_rows` prepares the
        values exactly as the column types store them).

        Why one statement on SQLite: aiosqlite runs the driver in a thread of its own, and
        the stdlib driver releases the GIL around each step and takes it back for each row
        of an ``executemany``. While the event loop thread is busy (a loaded proxy) every
        take-back waits out the interpreter's switch interval (5 ms), so a 500-row batch
        took seconds and the queue backed up. One statement takes the GIL back once.
        """
        if not entries:
            return
        if self._db.dialect == "sqlite":
            batch = sqlite_batch(entries)
            async with self._db.write() as session:
                conn = await session.connection()
                await conn.exec_driver_sql(_SQLITE_INSERT, (batch,))
            return
        rows = pg_rows(entries)
        async with self._db.write() as session:
            conn = await session.connection()
            raw = (await conn.get_raw_connection()).driver_connection
            if raw is None:  # pragma: no cover - a pooled connection always has one
                raise RuntimeError("no driver connection")
            async with raw.cursor() as cursor, cursor.copy(_PG_COPY) as copy:
                for row in rows:
                    await copy.write_row(row)

    async def page(self, query: LogQuery) -> LogPage:
        """One page of the entries matching ``query``, newest first, and the cursor of the
        next page (``None`` on the last one)."""
        statement = _filtered(select(OperationRow), query)
        if query.after is not None:
            at, row_id = query.after
            statement = statement.where(
                or_(OperationRow.at < at, and_(OperationRow.at == at, OperationRow.id < row_id))
            )
        limit = max(1, min(query.limit, MAX_LOG_PAGE))
        statement = statement.order_by(OperationRow.at.desc(), OperationRow.id.desc())
        async with self._db.read() as session:
            rows = (await session.scalars(statement.limit(limit + 1))).all()
        entries = [_operation(r) for r in rows[:limit]]
        after = (entries[-1].at, entries[-1].id) if len(rows) > limit else None
        return LogPage(entries, after)

    async def tail(self, query: LogQuery, *, after_id: int, limit: int = 500) -> list[Operation]:
        """Entries matching ``query`` with an id above ``after_id``, oldest first (``logs
        --follow``: ids grow with every insert, whatever the entry's ``at``)."""
        statement = _filtered(select(OperationRow), query).where(OperationRow.id > after_id)
        statement = statement.order_by(OperationRow.id).limit(max(1, min(limit, MAX_LOG_PAGE)))
        async with self._db.read() as session:
            rows = (await session.scalars(statement)).all()
        return [_operation(r) for r in rows]

    async def list(
        self,
        *,
        connection_id: str | None = None,
        org_id: str | None = None,
        kind: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Operation]:
        """Entries matching every given filter, newest first (the first page)."""
        query = LogQuery(
            connection_id=connection_id,
            org_id=org_id,
            kind=kind,
            outcome=outcome,
            since=since,
            limit=limit,
        )
        return (await self.page(query)).entries

    async def prune(self, before: datetime, *, batch: int = 5000, max_batches: int = 1000) -> int:
        """Delete entries older than ``before``, ``batch`` rows per transaction (so a big
        backlog never holds a long lock); returns how many were deleted."""
        deleted = 0
        for _ in range(max_batches):
            oldest = (
                select(OperationRow.id)
                .where(OperationRow.at < before)
                .order_by(OperationRow.at)
                .limit(batch)
            )
            async with self._db.write() as session:
                ids = list((await session.scalars(oldest)).all())
                if ids:
                    await session.execute(delete(OperationRow).where(OperationRow.id.in_(ids)))
            deleted += len(ids)
            if len(ids) < batch:
                break
        return deleted


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What ``GET /logs`` asks: every given filter must match.

    ``status_class`` is 2..5 (``4xx`` is 4); ``after`` is the ``(at, id)`` of the last entry
    of the previous page (keyset paging: stable while new entries arrive).
    """

    connection_id: str | None = None
    org_id: str | None = None
    kind: str | None = None
    outcome: str | None = None
    cause: str | None = None
    status_code: int | None = None
    status_class: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: tuple[datetime, int] | None = None
    limit: int = 100


def parse_status(text: str | None) -> tuple[int | None, int | None]:
    """``(status_code, status_class)`` of ``"401"`` or ``"4xx"``; ValueError otherwise."""
    if text is None:
        return None, None
    match = _STATUS.match(text.strip().lower())
    if match is None:
        raise ValueError("an HTTP status (e.g. 401) or a class (e.g. 4xx)")
    if match.group(1) is not None:
        return None, int(match.group(1))
    return int(match.group(2)), None


@dataclass(frozen=True, slots=True)
class LogPage:
    """A page of entries, newest first; ``after`` positions the next page (None: last)."""

    entries: list[Operation]
    after: tuple[datetime, int] | None


def _filtered(statement: Select[Any], query: LogQuery) -> Select[Any]:
    """``statement`` with every filter of ``query`` but the paging position."""
    for column, value in (
        (OperationRow.connection_id, query.connection_id),
        (OperationRow.org_id, query.org_id),
        (OperationRow.kind, query.kind),
        (OperationRow.outcome, query.outcome),
        (OperationRow.cause, query.cause),
        (OperationRow.status_code, query.status_code),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if query.status_class is not None:
        low = query.status_class * 100
        statement = statement.where(
            OperationRow.status_code >= low, OperationRow.status_code < low + 100
        )
    if query.since is not None:
        statement = statement.where(OperationRow.at >= query.since)
    if query.until is not None:
        statement = statement.where(OperationRow.at < query.until)
    return statement


def _cause_of(reason: str | None) -> str | None:
    parsed = Reason.parse(reason)
    cause = parsed.cause if parsed is not None else None
    return cause.value if cause is not None else None


# ``ORDER BY key`` keeps the batch's order in the ids (pages break ties on them);
# ``json_extract``, not ``->>`` (SQLite 3.38+), so older SQLite builds work.
_SQLITE_INSERT = (
    "INSERT INTO operations (at, kind, connection_id, org_id, outcome, cause, status_code,"
    " duration_ms, detail) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),"
    " json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'),"
    " json_extract(value, '$[5]'), json_extract(value, '$[6]'), json_extract(value, '$[7]'),"
    " json_extract(value, '$[8]') FROM json_each(?) ORDER BY key"
)
_PG_COPY = (
    "COPY operations (at, kind, connection_id, org_id, outcome, cause, status_code,"
    " duration_ms, detail) FROM STDIN"
)


def _operation(r: OperationRow) -> Operation:
    return Operation(
        id=r.id,
        at=r.at,
        kind=r.kind,
        connection_id=r.connection_id,
        org_id=r.org_id,
        outcome=r.outcome,
        cause=r.cause,
        status_code=r.status_code,
        duration_ms=r.duration_ms,
        detail=dict(r.detail),
    )
