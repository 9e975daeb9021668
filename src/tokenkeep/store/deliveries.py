"""Webhook deliveries: one row per (outbox event, endpoint), claimed by one sender at a time.

* **Fan-out** (:meth:`DeliveryRepository.fan_out`): outbox rows not yet fanned out become
  one ``pending`` delivery per endpoint whose filter matches, and are marked
  ``fanned_out_at`` in the same transaction.
* **Claims** (:meth:`DeliveryRepository.claim_due`): due ``pending`` rows without a live
  claim, in batches; on PostgreSQL ``FOR UPDATE SKIP LOCKED`` so N gateways take disjoint
  batches, on SQLite the ``BEGIN IMMEDIATE`` write transaction serialises claimers. The
  claim is a lease (``claim_owner``, ``claim_until``): a crashed sender's claim expires
  and another gateway sends the delivery again (at-least-once).
* **Attempts** (:meth:`DeliveryRepository.finish`): the outcome is written only by the
  claim's owner and only for the round it claimed (``generation``: a redeliver starts a
  new round), with its operation-log entry in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, or_, select, update

from tokenkeep.errors import NotFoundError
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import OutboxRow, WebhookDeliveryRow, WebhookEndpointRow
from tokenkeep.store.operations import OperationLog

__all__ = ["DELIVERED", "DELIVERY_STATES", "FAILED", "PENDING", "DeliveryRepository", "DueDelivery"]

_O = cast(Table, OutboxRow.__table__)
_D = cast(Table, WebhookDeliveryRow.__table__)
_E = cast(Table, WebhookEndpointRow.__table__)
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATES = (PENDING, DELIVERED, FAILED)


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery with what the sender needs of its event."""

    id: int
    generation: int
    attempts: int
    queued_at: datetime
    endpoint_id: str
    event_id: str
    event_type: str
    event_created_at: datetime
    connection_id: str | None
    org_id: str | None
    payload: dict[str, Any]


def _wants(events: list[str] | None, event_type: str) -> bool:
    return not events or event_type in events


def _new_delivery(event_id: str, endpoint_id: str, now: datetime) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "endpoint_id": endpoint_id,
        "state": PENDING,
        "attempts": 0,
        "queued_at": now,
        "next_at": now,
        "generation": 1,
        "created_at": now,
    }


class DeliveryRepository:
    """Fan out, claim, finish, list and requeue webhook deliveries."""

    def __init__(self, db: Database, operations: OperationLog) -> None:
        self._db = db
        self._operations = operations

    async def has_work(self, now: datetime) -> bool:
        """True when an event waits for its fan-out or a delivery is due and unclaimed: a
        read, so an idle worker never takes the write lock (SQLite) just to find nothing."""
        async with self._db.read() as session:
            unfanned = await session.scalar(
                select(_O.c.id).where(_O.c.fanned_out_at.is_(None)).limit(1)
            )
            if unfanned is not None:
                return True
            due = await session.scalar(
                select(_D.c.id)
                .where(
                    _D.c.state == PENDING,
                    _D.c.next_at <= now,
                    or_(_D.c.claim_owner.is_(None), _D.c.claim_until <= now),
                )
                .limit(1)
            )
        return due is not None

    async def fan_out(self, *, now: datetime, limit: int) -> int:
        """Turn up to ``limit`` new outbox events into deliveries; how many events."""
        async with self._db.write() as session:
            query = (
                select(_O.c.id, _O.c.event_id, _O.c.event_type)
                .where(_O.c.fanned_out_at.is_(None))
                .order_by(_O.c.id)
                .limit(limit)
            )
            if self._db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            events = (await session.execute(query)).all()
            if not events:
                return 0
            endpoints = (await session.execute(select(_E.c.id, _E.c.events))).all()
            existing = {
                (r.event_id, r.endpoint_id)
                for r in await session.execute(
                    select(_D.c.event_id, _D.c.endpoint_id).where(
                        _D.c.event_id.in_([e.event_id for e in events])
                    )
                )
            }
            rows = [
                _new_delivery(e.event_id, ep.id, now)
                for e in events
                for ep in endpoints
                if _wants(ep.events, e.event_type) and (e.event_id, ep.id) not in existing
            ]
            if rows:
                await session.execute(_D.insert(), rows)
            await session.execute(
                update(_O).where(_O.c.id.in_([e.id for e in events])).values(fanned_out_at=now)
            )
        return len(events)

    async def claim_due(
        self, *, now: datetime, limit: int, owner: str, lease_seconds: float
    ) -> list[DueDelivery]:
        """Claim up to ``limit`` due deliveries for ``owner`` for ``lease_seconds``."""
        async with self._db.write() as session:
            query = (
                select(_D.c.id)
                .where(
                    _D.c.state == PENDING,
                    _D.c.next_at <= now,
                    or_(_D.c.claim_owner.is_(None), _D.c.claim_until <= now),
                )
                .order_by(_D.c.next_at, _D.c.id)
                .limit(limit)
            )
            if self._db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = [r.id for r in await session.execute(query)]
            if not ids:
                return []
            await session.execute(
                update(_D)
                .where(_D.c.id.in_(ids))
                .values(claim_owner=owner, claim_until=now + timedelta(seconds=lease_seconds))
            )
            rows = await session.execute(
                select(
                    _D.c.id,
                    _D.c.generation,
                    _D.c.attempts,
                    _D.c.queued_at,
                    _D.c.endpoint_id,
                    _O.c.event_id,
                    _O.c.event_type,
                    _O.c.created_at,
                    _O.c.connection_id,
                    _O.c.org_id,
                    _O.c.payload,
                )
                .join(_O, _O.c.event_id == _D.c.event_id)
                .where(_D.c.id.in_(ids))
                .order_by(_D.c.next_at, _D.c.id)
            )
            return [
                DueDelivery(
                    id=r.id,
                    generation=r.generation,
                    attempts=r.attempts,
                    queued_at=r.queued_at,
                    endpoint_id=r.endpoint_id,
                    event_id=r.event_id,
                    event_type=r.event_type,
                    event_created_at=r.created_at,
                    connection_id=r.connection_id,
                    org_id=r.org_id,
                    payload=dict(r.payload),
                )
                for r in rows
            ]

    async def finish(
        self,
        delivery: DueDelivery,
        *,
        owner: str,
        now: datetime,
        delivered: bool,
        next_at: datetime | None,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
    ) -> str:
        """Record one attempt: ``delivered``, else retry at ``next_at`` (``None``: give up).

        Written only while ``owner`` holds the claim of the same round; the attempt is
        logged (kind ``webhook``) either way. Returns the log outcome: ``delivered``,
        ``retrying``, ``failed`` or ``superseded`` (a redeliver or another sender moved the
        row on meanwhile)."""
        attempt = delivery.attempts + 1
        values: dict[str, Any] = {
            "attempts": attempt,
            "last_attempt_at": now,
            "last_status_code": status_code,
            "last_error": error[:500] if error else None,
            "claim_owner": None,
            "claim_until": None,
        }
        if delivered:
            outcome = DELIVERED
            values.update(state=DELIVERED, delivered_at=now)
        elif next_at is None:
            outcome = FAILED
            values.update(state=FAILED, failed_at=now)
        else:
            outcome = "retrying"
            values["next_at"] = next_at
        async with self._db.write() as session:
            result = await session.execute(
                update(_D)
                .where(
                    _D.c.id == delivery.id,
                    _D.c.claim_owner == owner,
                    _D.c.generation == delivery.generation,
                )
                .values(**values)
            )
            if not rowcount(result):
                outcome = "superseded"
                await session.execute(
                    update(_D)
                    .where(_D.c.id == delivery.id, _D.c.claim_owner == owner)
                    .values(claim_owner=None, claim_until=None)
                )
            await self._operations.log(
                "webhook",
                outcome=outcome,
                connection_id=delivery.connection_id,
                org_id=delivery.org_id,
                status_code=status_code,
                duration_ms=duration_ms,
                detail={
                    "event_id": delivery.event_id,
                    "event_type": delivery.event_type,
                    "endpoint_id": delivery.endpoint_id,
                    "attempt": attempt,
                    "worker": owner,
                    "status_code": status_code,
                    "error": error[:200] if error else None,
                },
                session=session,
            )
        return outcome

    async def release(self, delivery_ids: Sequence[int], owner: str) -> None:
        """Give back claims not used (the worker is stopping)."""
        if not delivery_ids:
            return
        async with self._db.write() as session:
            await session.execute(
                update(_D)
                .where(_D.c.id.in_(list(delivery_ids)), _D.c.claim_owner == owner)
                .values(claim_owner=None, claim_until=None)
            )

    async def redeliver(
        self, event_id: str, *, now: datetime, endpoint_id: str | None = None
    ) -> list[str]:
        """Start a new delivery round of ``event_id`` for ``endpoint_id`` (any endpoint,
        even one whose filter skips the type) or for every endpoint that subscribes to it.
        Returns the endpoint ids requeued; ``NotFoundError`` for an unknown event or
        endpoint."""
        async with self._db.write() as session:
            event = (
                await session.execute(select(_O.c.event_type).where(_O.c.event_id == event_id))
            ).first()
            if event is None:
                raise NotFoundError(f"event {event_id!r} does not exist")
            endpoints = (await session.execute(select(_E.c.id, _E.c.events))).all()
            if endpoint_id is not None:
                targets = [ep.id for ep in endpoints if ep.id == endpoint_id]
                if not targets:
                    raise NotFoundError(f"webhook endpoint {endpoint_id!r} does not exist")
            else:
                targets = [ep.id for ep in endpoints if _wants(ep.events, event.event_type)]
            existing = {
                r.endpoint_id
                for r in await session.execute(
                    select(_D.c.endpoint_id).where(_D.c.event_id == event_id)
                )
            }
            again = [t for t in targets if t in existing]
            if again:
                await session.execute(
                    update(_D)
                    .where(_D.c.event_id == event_id, _D.c.endpoint_id.in_(again))
                    .values(
                        state=PENDING,
                        attempts=0,
                        generation=_D.c.generation + 1,
                        queued_at=now,
                        next_at=now,
                        delivered_at=None,
                        failed_at=None,
                    )
                )
            new = [_new_delivery(event_id, t, now) for t in targets if t not in existing]
            if new:
                await session.execute(_D.insert(), new)
        return targets

    async def pending_count(self) -> int:
        """Deliveries still to send (and outbox events not fanned out yet)."""
        async with self._db.read() as session:
            deliveries = await session.scalar(
                select(func.count()).select_from(_D).where(_D.c.state == PENDING)
            )
            events = await session.scalar(
                select(func.count()).select_from(_O).where(_O.c.fanned_out_at.is_(None))
            )
        return int(deliveries or 0) + int(events or 0)
