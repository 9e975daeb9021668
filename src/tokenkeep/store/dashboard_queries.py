"""The dashboard's read queries: connection search, status counts, the 24-hour activity.

Each is one or two indexed statements, whatever the number of connections:

* :meth:`DashboardQueries.search_connections` -- newest first, keyset paging on
  ``(created_at, id)`` (``ix_connections_created_at_id``), a case-insensitive ``LIKE`` on
  id, org, user, username and instance, and exact filters; plus the total of the matches.
* :meth:`DashboardQueries.status_counts` -- connections per integration and status, one
  ``GROUP BY``.
* :meth:`DashboardQueries.hourly_activity` -- proxied calls and session errors per hour
  from ``org_call_counts`` (``ix_org_call_counts_bucket_start``), and the calls that ended
  with a cause per hour and cause from the operation log (``ix_operations_cause_at``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, and_, cast, extract, func, or_, select

from tokenkeep.clock import utc_from_timestamp
from tokenkeep.errors import ValidationError
from tokenkeep.store.connections import ConnectionRepository, decode_cursor, encode_cursor
from tokenkeep.store.database import Database
from tokenkeep.store.models import ConnectionRow, OperationRow, OrgCallCountRow
from tokenkeep.store.records import CONNECTION_STATUSES, ConnectionPage

__all__ = ["MAX_SEARCH_PAGE", "DashboardQueries", "HourActivity", "escape_like"]

MAX_SEARCH_PAGE = 200
HOUR = 3600


@dataclass(slots=True)
class HourActivity:
    """One hour of proxied traffic (``hour`` is its start, UTC)."""

    hour: datetime
    calls: int = 0
    session_errors: int = 0
    causes: dict[str, int] = field(default_factory=dict)


def escape_like(text: str) -> str:
    """``text`` as a literal inside a ``LIKE`` pattern (escape character ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class DashboardQueries:
    """Read-only queries behind the dashboard's pages."""

    def __init__(self, db: Database, connections: ConnectionRepository) -> None:
        self._db = db
        self._connections = connections

    async def search_connections(
        self,
        *,
        text: str | None = None,
        status: str | None = None,
        integration: str | None = None,
        org_id: str | None = None,
        reason: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[ConnectionPage, int]:
        """A page of matching connections, newest first, and how many match in all.

        ``text`` matches anywhere in the id, org id, user id, username or instance URL
        (case-insensitive); ``reason`` matches the start of ``status_reason`` (a cause
        word matches every ``cause:detail``)."""
        if status is not None and status not in CONNECTION_STATUSES:
            raise ValidationError(f"status must be one of {', '.join(CONNECTION_STATUSES)}")
        filters: list[ColumnElement[bool]] = []
        if text:
            pattern = f"%{escape_like(text)}%"
            filters.append(
                or_(
                    *(
                        column.ilike(pattern, escape="\\")
                        for column in (
                            ConnectionRow.id,
                            ConnectionRow.org_id,
                            ConnectionRow.user_id,
                            ConnectionRow.username,
                            ConnectionRow.instance_url,
                        )
                    )
                )
            )
        if status is not None:
            filters.append(ConnectionRow.status == status)
        if integration is not None:
            filters.append(ConnectionRow.integration_key == integration)
        if org_id is not None:
            filters.append(ConnectionRow.org_id == org_id)
        if reason is not None:
            filters.append(ConnectionRow.status_reason.like(f"{escape_like(reason)}%", escape="\\"))
        limit = max(1, min(limit, MAX_SEARCH_PAGE))
        page_query = select(ConnectionRow).where(*filters)
        if cursor is not None:
            before_at, before_id = decode_cursor(cursor)
            page_query = page_query.where(
                or_(
                    ConnectionRow.created_at < before_at,
                    and_(ConnectionRow.created_at == before_at, ConnectionRow.id < before_id),
                )
            )
        page_query = page_query.order_by(
            ConnectionRow.created_at.desc(), ConnectionRow.id.desc()
        ).limit(limit + 1)
        count_query = select(func.count()).select_from(ConnectionRow).where(*filters)
        async with self._db.read() as session:
            rows = list((await session.scalars(page_query)).all())
            total = int(await session.scalar(count_query) or 0)
        more = len(rows) > limit
        rows = rows[:limit]
        items = [self._connections.to_record(r) for r in rows]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return ConnectionPage(items=items, next_cursor=next_cursor), total

    async def status_counts(self) -> dict[str, dict[str, int]]:
        """``{integration: {status: connections}}`` (every status present, zeros included)."""
        query = select(ConnectionRow.integration_key, ConnectionRow.status, func.count()).group_by(
            ConnectionRow.integration_key, ConnectionRow.status
        )
        result: dict[str, dict[str, int]] = {}
        async with self._db.read() as session:
            for integration, status, count in await session.execute(query):
                counts = result.setdefault(str(integration), dict.fromkeys(CONNECTION_STATUSES, 0))
                counts[str(status)] = counts.get(str(status), 0) + int(count)
        return dict(sorted(result.items()))

    async def hourly_activity(self, until: datetime, *, hours: int = 24) -> list[HourActivity]:
        """``hours`` hours up to ``until`` (the current hour last), oldest first."""
        last = int(until.timestamp()) // HOUR
        first = last - hours + 1
        since = utc_from_timestamp(first * HOUR)
        buckets = {h: HourActivity(utc_from_timestamp(h * HOUR)) for h in range(first, last + 1)}
        count_hour = self._hour_of(OrgCallCountRow.bucket_start)
        counts = (
            select(
                count_hour,
                func.sum(OrgCallCountRow.calls),
                func.sum(OrgCallCountRow.session_errors),
            )
            .where(OrgCallCountRow.bucket_start >= since)
            .group_by(count_hour)
        )
        op_hour = self._hour_of(OperationRow.at)
        causes = (
            select(op_hour, OperationRow.cause, func.count())
            .where(
                OperationRow.cause.is_not(None),
                OperationRow.at >= since,
                OperationRow.kind == "call",
            )
            .group_by(op_hour, OperationRow.cause)
        )
        async with self._db.read() as session:
            for hour, calls, errors in await session.execute(counts):
                bucket = buckets.get(int(hour))
                if bucket is not None:
                    bucket.calls += int(calls or 0)
                    bucket.session_errors += int(errors or 0)
            for hour, cause, n in await session.execute(causes):
                bucket = buckets.get(int(hour))
                if bucket is not None:
                    bucket.causes[str(cause)] = bucket.causes.get(str(cause), 0) + int(n)
        return [buckets[h] for h in range(first, last + 1)]

    def _hour_of(self, column: Any) -> ColumnElement[Any]:
        """The hour number (unix seconds // 3600) of a datetime column, in SQL."""
        if self._db.dialect == "postgresql":
            return cast(func.floor(extract("epoch", column) / HOUR), BigInteger)
        # SQLite keeps naive UTC text: strftime('%s') reads it as UTC.
        return cast(func.strftime("%s", column), Integer) / HOUR
