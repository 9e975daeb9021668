"""The outbox as ``GET /events`` shows it: events newest first, each with its deliveries.

An event's ``status`` is ``pending`` until it is fanned out and every delivery is done,
then ``failed`` if any delivery failed, else ``delivered``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, exists, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from tokenkeep.errors import NotFoundError, ValidationError
from tokenkeep.store.database import Database
from tokenkeep.store.deliveries import DELIVERED, DELIVERY_STATES, FAILED, PENDING
from tokenkeep.store.models import OutboxRow, WebhookDeliveryRow

__all__ = ["MAX_EVENT_PAGE", "DeliveryStatus", "OutboxEvent", "OutboxEventRepository"]

_O = cast(Table, OutboxRow.__table__)
_D = cast(Table, WebhookDeliveryRow.__table__)
MAX_EVENT_PAGE = 500


@dataclass(frozen=True, slots=True)
class DeliveryStatus:
    """Where one event stands with one endpoint."""

    endpoint_id: str
    state: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An outbox event and its deliveries (``status``: pending, delivered or failed)."""

    id: int
    event_id: str
    event_type: str
    connection_id: str | None
    org_id: str | None
    payload: dict[str, Any]
    created_at: datetime
    fanned_out_at: datetime | None
    deliveries: tuple[DeliveryStatus, ...]

    @property
    def status(self) -> str:
        """``pending`` until every delivery is done; then ``failed`` if any failed, else
        ``delivered`` (also for an event no endpoint subscribes to: nothing is left)."""
        if self.fanned_out_at is None or any(d.state == PENDING for d in self.deliveries):
            return PENDING
        return FAILED if any(d.state == FAILED for d in self.deliveries) else DELIVERED


class OutboxEventRepository:
    """Read the outbox with its deliveries."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_events(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        event_type: str | None = None,
        connection_id: str | None = None,
        status: str | None = None,
    ) -> tuple[list[OutboxEvent], str | None]:
        """Events newest first and the cursor of the next page (``None``: last page)."""
        query = select(_O)
        if cursor is not None:
            try:
                before = int(cursor)
            except ValueError:
                raise ValidationError("cursor is not a cursor returned by this API") from None
            query = query.where(_O.c.id < before)
        if event_type is not None:
            query = query.where(_O.c.event_type == event_type)
        if connection_id is not None:
            query = query.where(_O.c.connection_id == connection_id)
        if status is not None:
            query = query.where(_status_filter(status))
        limit = max(1, min(limit, MAX_EVENT_PAGE))
        query = query.order_by(_O.c.id.desc()).limit(limit + 1)
        async with self._db.read() as session:
            rows = (await session.execute(query)).all()
            page = rows[:limit]
            deliveries = await self._deliveries(session, [r.event_id for r in page])
        events = [_event(r, deliveries.get(r.event_id, ())) for r in page]
        next_cursor = str(page[-1].id) if len(rows) > limit else None
        return events, next_cursor

    async def get_event(self, event_id: str) -> OutboxEvent:
        """One event with its deliveries (``NotFoundError`` if unknown)."""
        async with self._db.read() as session:
            row = (await session.execute(select(_O).where(_O.c.event_id == event_id))).first()
            if row is None:
                raise NotFoundError(f"event {event_id!r} does not exist")
            deliveries = await self._deliveries(session, [event_id])
        return _event(row, deliveries.get(event_id, ()))

    async def _deliveries(
        self, session: AsyncSession, event_ids: list[str]
    ) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {}
        if not event_ids:
            return found
        rows = await session.execute(
            select(_D).where(_D.c.event_id.in_(event_ids)).order_by(_D.c.endpoint_id)
        )
        for r in rows:
            found.setdefault(r.event_id, []).append(r)
        return found


def _status_filter(status: str) -> ColumnElement[bool]:
    def has(state: str) -> ColumnElement[bool]:
        return exists().where(_D.c.event_id == _O.c.event_id, _D.c.state == state)

    pending = or_(_O.c.fanned_out_at.is_(None), has(PENDING))
    if status == PENDING:
        return pending
    if status == FAILED:
        return and_(not_(pending), has(FAILED))
    if status == DELIVERED:
        return and_(not_(pending), not_(has(FAILED)))
    raise ValidationError(f"status must be one of {', '.join(DELIVERY_STATES)}")


def _event(row: Any, deliveries: Sequence[Any]) -> OutboxEvent:
    return OutboxEvent(
        id=row.id,
        event_id=row.event_id,
        event_type=row.event_type,
        connection_id=row.connection_id,
        org_id=row.org_id,
        payload=dict(row.payload),
        created_at=row.created_at,
        fanned_out_at=row.fanned_out_at,
        deliveries=tuple(
            DeliveryStatus(
                endpoint_id=d.endpoint_id,
                state=d.state,
                attempts=d.attempts,
                last_status_code=d.last_status_code,
                last_error=d.last_error,
                last_attempt_at=d.last_attempt_at,
                next_at=d.next_at if d.state == PENDING else None,
                delivered_at=d.delivered_at,
                failed_at=d.failed_at,
            )
            for d in deliveries
        ),
    )
