"""The operation log and the webhook outbox."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database
from tokenkeep.store.models import OperationRow, OutboxRow
from tokenkeep.store.records import Operation

__all__ = ["OperationLog", "Outbox"]

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
