"""The database-derived gauges ``GET /metrics`` shows, read in one short transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select

from tokenkeep.store.database import Database
from tokenkeep.store.deliveries import PENDING
from tokenkeep.store.models import ConnectionRow, OrgStateRow, OutboxRow, WebhookDeliveryRow
from tokenkeep.store.schedule import due_filter

__all__ = ["GaugeSample", "sample_gauges"]


@dataclass(frozen=True, slots=True)
class GaugeSample:
    """Counts at one moment (every gateway reads the same numbers)."""

    connections_by_status: dict[str, int] = field(default_factory=dict)
    outbox_pending: int = 0
    scheduler_due: int = 0
    orgs_write_paused: int = 0
    orgs_spiking: int = 0


async def sample_gauges(db: Database, now: datetime) -> GaugeSample:
    """Connections by status, undelivered events, due refreshes, paused and spiking orgs."""
    async with db.read() as session:
        by_status = {
            str(status): int(count)
            for status, count in await session.execute(
                select(ConnectionRow.status, func.count()).group_by(ConnectionRow.status)
            )
        }
        # Webhook work left: deliveries still to send, and events not fanned out yet.
        pending = await session.scalar(
            select(func.count())
            .select_from(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.state == PENDING)
        )
        unfanned = await session.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.fanned_out_at.is_(None))
        )
        due = await session.scalar(
            select(func.count()).select_from(ConnectionRow).where(due_filter(now))
        )
        paused = await session.scalar(
            select(func.count())
            .select_from(OrgStateRow)
            .where(OrgStateRow.pause_started_at.is_not(None))
        )
        spiking = await session.scalar(
            select(func.count())
            .select_from(OrgStateRow)
            .where(OrgStateRow.spike_started_at.is_not(None))
        )
    return GaugeSample(
        connections_by_status=by_status,
        outbox_pending=int(pending or 0) + int(unfanned or 0),
        scheduler_due=int(due or 0),
        orgs_write_paused=int(paused or 0),
        orgs_spiking=int(spiking or 0),
    )
