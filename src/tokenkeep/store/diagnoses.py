"""A connection's last diagnosis, and the status change a diagnosis makes, in one write.

:meth:`DiagnosisRepository.record` stores the verdict (``connections.diagnosis``: cause,
confidence, evidence, fix, when), appends a ``diagnosis`` operation-log row with its
evidence, and — when the verdict changes the status — sets ``status`` / ``status_reason``
and queues the outbox event, all in one transaction: the webhook is durable exactly when
the change is. The status change is a compare-and-set on the status the caller saw, so two
gateways diagnosing the same connection write one event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from tokenkeep.clock import Clock
from tokenkeep.errors import NotFoundError
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import ConnectionRow
from tokenkeep.store.operations import OperationLog, Outbox

__all__ = ["DiagnosisRepository", "StatusChange"]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """Set ``status``/``reason`` if the row's status is still ``expected``; queue ``event``."""

    status: str
    reason: str | None
    expected: str
    event: str | None = None


class DiagnosisRepository:
    """Store verdicts on connection rows (see the module docstring)."""

    def __init__(
        self, db: Database, clock: Clock, operations: OperationLog, outbox: Outbox
    ) -> None:
        self._db = db
        self._clock = clock
        self._operations = operations
        self._outbox = outbox

    async def record(
        self,
        connection_id: str,
        org_id: str | None,
        verdict: dict[str, Any],
        *,
        change: StatusChange | None = None,
        outcome: str = "ok",
        status_code: int | None = None,
        event: str | None = None,
    ) -> bool:
        """Store ``verdict`` (JSON, never a secret); returns True when ``change`` applied.
        ``event`` is queued whatever the status (e.g. ``connection.instance_moved``)."""
        now = self._clock.now()
        doc = {**verdict, "diagnosed_at": now.isoformat()}
        changed = False
        async with self._db.write() as session:
            values: dict[str, Any] = {"diagnosis": doc}
            if change is not None:
                result = await session.execute(
                    update(ConnectionRow)
                    .where(ConnectionRow.id == connection_id)
                    .where(ConnectionRow.status == change.expected)
                    .values(
                        status=change.status,
                        status_reason=change.reason,
                        updated_at=now,
                        **values,
                    )
                    .execution_options(synchronize_session=False)
                )
                changed = bool(rowcount(result))
            if not changed:
                result = await session.execute(
                    update(ConnectionRow)
                    .where(ConnectionRow.id == connection_id)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if not rowcount(result):
                    raise NotFoundError(f"connection {connection_id!r} does not exist")
            if changed and change is not None:
                self._operations.status_changed(
                    session,
                    connection_id,
                    org_id,
                    previous=change.expected,
                    status=change.status,
                    reason=change.reason,
                    by="diagnosis",
                )
            events = [change.event] if changed and change is not None and change.event else []
            if event is not None:
                events.append(event)
            for event_type in events:
                self._outbox.add_event(
                    session,
                    event_type,
                    payload={
                        "connection_id": connection_id,
                        "org_id": org_id,
                        "status": change.status if changed and change else None,
                        "reason": change.reason if changed and change else None,
                        "cause": verdict.get("cause"),
                        "fix": verdict.get("fix"),
                        "evidence": verdict.get("evidence", []),
                    },
                    connection_id=connection_id,
                    org_id=org_id,
                )
            await self._operations.log(
                "diagnosis",
                outcome=outcome,
                connection_id=connection_id,
                org_id=org_id,
                cause=verdict.get("cause"),
                status_code=status_code,
                detail={
                    "confidence": verdict.get("confidence"),
                    "evidence": verdict.get("evidence", []),
                    "fix": verdict.get("fix"),
                    "recovered": verdict.get("recovered"),
                    "status_changed_to": change.status if changed and change else None,
                },
                session=session,
            )
        return changed

    async def last(self, connection_id: str) -> dict[str, Any] | None:
        """The connection's last stored diagnosis, if any."""
        async with self._db.read() as session:
            found = await session.execute(
                select(ConnectionRow.id, ConnectionRow.diagnosis).where(
                    ConnectionRow.id == connection_id
                )
            )
            row = found.first()
        if row is None:
            raise NotFoundError(f"connection {connection_id!r} does not exist")
        return dict(row[1]) if row[1] else None
