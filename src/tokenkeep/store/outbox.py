"""The webhook outbox: events written in the transaction of the change they report.

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
from typing import Any

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, object_session

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database
from tokenkeep.store.models import ConnectionRow, OutboxRow

__all__ = ["STANDARD_KEYS", "Outbox", "standard_payload"]

#: The keys every event's payload has (``None`` when they do not apply, e.g. org events).
STANDARD_KEYS = ("connection_id", "integration", "org_id", "status", "reason", "fix")


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
