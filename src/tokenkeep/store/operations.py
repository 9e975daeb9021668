"""The operation log and the webhook outbox.

Every outbox event carries the same standard keys in its payload, whoever wrote it
(:data:`STANDARD_KEYS`): ``connection_id``, ``integration``, ``org_id``, ``status``,
``reason`` and ``fix``. Writers give what they know; the rest is filled here, once, when
the row is inserted -- from the connection row as it stands in the writer's own
transaction (so ``status`` is the status the event reports, not a later one). ``fix`` is
left ``None`` unless the writer gave one: its words live in ``tokenkeep.diagnosis``, above
the store; the webhook envelope (``tokenkeep.events.envelope``) adds them.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, object_session

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database
from tokenkeep.store.models import ConnectionRow, OperationRow, OutboxRow
from tokenkeep.store.records import Operation

__all__ = ["STANDARD_KEYS", "OperationLog", "Outbox", "standard_payload"]

#: The keys every event's payload has (``None`` when they do not apply, e.g. org events).
STANDARD_KEYS = ("connection_id", "integration", "org_id", "status", "reason", "fix")

MAX_LOG_PAGE = 1000


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
        row = OperationRow(
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
        if session is not None:
            session.add(row)
            return
        async with self._db.write() as own:
            own.add(row)

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
        """Entries matching every given filter, newest first."""
        query = select(OperationRow)
        if connection_id is not None:
            query = query.where(OperationRow.connection_id == connection_id)
        if org_id is not None:
            query = query.where(OperationRow.org_id == org_id)
        if kind is not None:
            query = query.where(OperationRow.kind == kind)
        if outcome is not None:
            query = query.where(OperationRow.outcome == outcome)
        if since is not None:
            query = query.where(OperationRow.at >= since)
        query = query.order_by(OperationRow.at.desc(), OperationRow.id.desc())
        query = query.limit(max(1, min(limit, MAX_LOG_PAGE)))
        async with self._db.read() as session:
            rows = (await session.scalars(query)).all()
        return [
            Operation(
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
            for r in rows
        ]


class Outbox:
    """Durable webhook events: written in the same transaction as the change they report."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def add_event(
        self,
        session: AsyncSession,
        event_type: str,
        *,
        payload: dict[str, Any],
        connection_id: str | None = None,
        org_id: str | None = None,
    ) -> str:
        """Queue an event inside ``session`` (a :meth:`Database.write` session); returns its
        id (``evt_...``, the ``webhook-id`` deliveries will carry)."""
        now = self._clock.now()
        event_id = "evt_" + secrets.token_hex(12)
        session.add(
            OutboxRow(
                event_id=event_id,
                event_type=event_type,
                connection_id=connection_id,
                org_id=org_id,
                payload=dict(payload),
                created_at=now,
                available_at=now,
                attempts=0,
                delivered_at=None,
                last_error=None,
            )
        )
        return event_id


def standard_payload(
    payload: dict[str, Any],
    *,
    connection_id: str | None,
    org_id: str | None,
    connection: tuple[str | None, str | None, str | None, str | None] | None = None,
) -> dict[str, Any]:
    """``payload`` with every :data:`STANDARD_KEYS` present; a missing or ``None`` key is
    taken from the arguments, then from ``connection`` = (integration, org id, status,
    status reason) of the connection row."""
    out = dict(payload)
    integration, row_org, status, reason = connection or (None, None, None, None)
    known = {
        "connection_id": connection_id,
        "integration": integration,
        "org_id": org_id or row_org,
        "status": status,
        "reason": reason,
        "fix": None,
    }
    for key in STANDARD_KEYS:
        if out.get(key) is None:
            out[key] = known[key]
    return out


@event.listens_for(OutboxRow, "before_insert")
def _fill_standard_keys(_mapper: Mapper[Any], conn: SyncConnection, row: OutboxRow) -> None:
    # Runs inside the flush of the writer's transaction (SQLAlchemy's documented place for
    # reads on the flushing connection), so the connection row is read as the writer left
    # it: an UPDATE it made is visible, and a row it is inserting in this same flush is
    # taken from the session.
    connection_id = row.connection_id or row.payload.get("connection_id")
    found: tuple[str | None, str | None, str | None, str | None] | None = None
    if connection_id and any(row.payload.get(k) is None for k in STANDARD_KEYS[1:5]):
        session = object_session(row)
        pending = [
            obj
            for obj in (session.new if session is not None else ())
            if isinstance(obj, ConnectionRow) and obj.id == connection_id
        ]
        if pending:
            c = pending[0]
            found = (c.integration_key, c.org_id, c.status, c.status_reason)
        else:
            result = conn.execute(
                select(
                    ConnectionRow.integration_key,
                    ConnectionRow.org_id,
                    ConnectionRow.status,
                    ConnectionRow.status_reason,
                ).where(ConnectionRow.id == connection_id)
            ).one_or_none()
            if result is not None:
                found = (result[0], result[1], result[2], result[3])
    row.payload = standard_payload(
        row.payload,
        connection_id=connection_id,
        org_id=row.org_id or row.payload.get("org_id"),
        connection=found,
    )
    if row.org_id is None and row.payload.get("org_id"):
        row.org_id = row.payload["org_id"]
