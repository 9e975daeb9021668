"""Per-org state shared by every gateway (``org_state``): the learned session timeout, the
write pause and its probe claim, the spike episode and the last ``Sforce-Limit-Info``.

Every state change that raises a webhook event is a compare-and-set taking the caller's
``session`` (``UPDATE ... WHERE <expected state>``, one row hit or none), so the caller
adds the outbox event in the same transaction: the event exists exactly when the change
does, and two gateways racing for the same change produce one event.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import ConnectionRow, OperationRow, OrgStateRow
from tokenkeep.store.operations import OperationLog
from tokenkeep.store.records import OrgConnections, OrgState

__all__ = ["LearnedTimeout", "OrgStateRepository", "ProbeClaim"]


@dataclass(frozen=True, slots=True)
class LearnedTimeout:
    """An org's learned session timeout (seconds), when it was learned, from how many
    samples."""

    seconds: float
    learned_at: datetime
    samples: int


class ProbeClaim(enum.Enum):
    """The answer to a write-pause probe claim."""

    CLAIMED = "claimed"  # this owner holds the one probe of every gateway
    WAIT = "wait"  # paused, and not yet due, or another owner's probe is in flight
    NOT_PAUSED = "not_paused"  # the pause has ended (another gateway's probe succeeded)


def _state(row: OrgStateRow) -> OrgState:
    return OrgState(
        org_id=row.org_id,
        pause_started_at=row.pause_started_at,
        writes_paused_until=row.writes_paused_until,
        pause_probe_owner=row.pause_probe_owner,
        pause_probe_until=row.pause_probe_until,
        last_limit_info=row.last_limit_info,
        last_limit_info_at=row.last_limit_info_at,
        session_timeout_estimate_seconds=row.session_timeout_estimate_seconds,
        session_timeout_learned_at=row.session_timeout_learned_at,
        session_timeout_samples=row.session_timeout_samples or 0,
        spike_started_at=row.spike_started_at,
    )


class OrgStateRepository:
    """Reads and fenced writes of ``org_state`` (and the per-org view of connections)."""

    def __init__(self, db: Database, clock: Clock, operations: OperationLog) -> None:
        self._db = db
        self._clock = clock
        self._operations = operations

    # -- reads -----------------------------------------------------------------------------

    async def get(self, org_id: str) -> OrgState | None:
        """The org's shared row, or ``None`` if nothing was ever recorded for it."""
        async with self._db.read() as session:
            row = await session.get(OrgStateRow, org_id)
            return _state(row) if row is not None else None

    async def states(self, org_ids: list[str]) -> dict[str, OrgState]:
        """The shared rows of ``org_ids`` that exist."""
        if not org_ids:
            return {}
        async with self._db.read() as session:
            rows = await session.scalars(select(OrgStateRow).where(OrgStateRow.org_id.in_(org_ids)))
            return {row.org_id: _state(row) for row in rows}

    async def paused(self) -> list[OrgState]:
        """Every org whose writes are paused (the shared pause's poll: a handful of rows)."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(OrgStateRow).where(OrgStateRow.pause_started_at.is_not(None))
            )
            return [_state(row) for row in rows]

    async def open_spikes(self) -> list[str]:
        """The orgs with an open ``org.session_error_spike`` episode."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(OrgStateRow.org_id).where(OrgStateRow.spike_started_at.is_not(None))
            )
            return list(rows)

    async def connections_by_org(
        self,
        *,
        org_id: str | None = None,
        integration: str | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> list[OrgConnections]:
        """Orgs that have connections (by org id, after ``after``), with counts per status."""
        query = (
            select(ConnectionRow.org_id, ConnectionRow.status, func.count())
            .where(ConnectionRow.org_id != "")
            .group_by(ConnectionRow.org_id, ConnectionRow.status)
        )
        if org_id is not None:
            query = query.where(ConnectionRow.org_id == org_id)
        if integration is not None:
            query = query.where(ConnectionRow.integration_key == integration)
        if after is not None:
            query = query.where(ConnectionRow.org_id > after)
        orgs = (
            select(ConnectionRow.org_id)
            .where(ConnectionRow.org_id != "")
            .group_by(ConnectionRow.org_id)
            .order_by(ConnectionRow.org_id)
            .limit(limit)
        )
        if org_id is not None:
            orgs = orgs.where(ConnectionRow.org_id == org_id)
        if integration is not None:
            orgs = orgs.where(ConnectionRow.integration_key == integration)
        if after is not None:
            orgs = orgs.where(ConnectionRow.org_id > after)
        async with self._db.read() as session:
            page = list(await session.scalars(orgs))
            result: dict[str, dict[str, int]] = {org: {} for org in page}
            if page:
                for org, status, count in await session.execute(
                    query.where(ConnectionRow.org_id.in_(page))
                ):
                    result[org][str(status)] = int(count)
        return [OrgConnections(org, by_status) for org, by_status in result.items()]

    async def probes_since(self, org_id: str, since: datetime) -> int:
        """Write-pause probes logged for ``org_id`` since ``since`` (the episode's count)."""
        async with self._db.read() as session:
            value = await session.scalar(
                select(func.count()).where(
                    OperationRow.org_id == org_id,
                    OperationRow.kind == "write_pause_probe",
                    OperationRow.at >= since,
                )
            )
        return int(value or 0)

    # -- the shared write pause (fenced, in the caller's transaction) -----------------------

    async def _ensure_row(self, session: AsyncSession, org_id: str) -> None:
        """Insert the org's empty row unless it exists (no error when another does too)."""
        insert = pg_insert if self._db.dialect == "postgresql" else sqlite_insert
        await session.execute(
            insert(OrgStateRow)
            .values(org_id=org_id, updated_at=self._clock.now(), session_timeout_samples=0)
            .on_conflict_do_nothing(index_elements=["org_id"])
        )

    async def start_pause(
        self, session: AsyncSession, org_id: str, *, now: datetime, next_probe_at: datetime
    ) -> bool:
        """Pause the org's writes unless they already are: True when this call paused them."""
        await self._ensure_row(session, org_id)
        result = await session.execute(
            update(OrgStateRow)
            .where(OrgStateRow.org_id == org_id, OrgStateRow.pause_started_at.is_(None))
            .values(
                pause_started_at=now,
                writes_paused_until=next_probe_at,
                pause_probe_owner=None,
                pause_probe_until=None,
                updated_at=now,
            )
        )
        return bool(rowcount(result))

    async def claim_probe(
        self, org_id: str, owner: str, *, now: datetime, until: datetime
    ) -> tuple[ProbeClaim, OrgState | None]:
        """Take the org's one probe slot for ``owner`` until ``until`` (compare-and-set:
        paused, due, and no live claim of anyone); returns the verdict and the row."""
        async with self._db.write() as session:
            result = await session.execute(
                update(OrgStateRow)
                .where(
                    OrgStateRow.org_id == org_id,
                    OrgStateRow.pause_started_at.is_not(None),
                    OrgStateRow.writes_paused_until <= now,
                    or_(
                        OrgStateRow.pause_probe_owner.is_(None),
                        OrgStateRow.pause_probe_until <= now,
                    ),
                )
                .values(pause_probe_owner=owner, pause_probe_until=until, updated_at=now)
            )
            row = await session.get(OrgStateRow, org_id, populate_existing=True)
            state = _state(row) if row is not None else None
        if rowcount(result):
            return ProbeClaim.CLAIMED, state
        if state is None or not state.paused:
            return ProbeClaim.NOT_PAUSED, state
        return ProbeClaim.WAIT, state

    async def end_pause(
        self, session: AsyncSession, org_id: str, owner: str, *, now: datetime
    ) -> OrgState | None:
        """The probe of ``owner`` succeeded: resume writes. Returns the row as it was (for
        the event), or ``None`` when ``owner`` no longer held the probe."""
        row = await session.get(OrgStateRow, org_id)
        before = _state(row) if row is not None else None
        result = await session.execute(
            update(OrgStateRow)
            .where(
                OrgStateRow.org_id == org_id,
                OrgStateRow.pause_started_at.is_not(None),
                OrgStateRow.pause_probe_owner == owner,
            )
            .values(
                pause_started_at=None,
                writes_paused_until=None,
                pause_probe_owner=None,
                pause_probe_until=None,
                updated_at=now,
            )
        )
        return before if rowcount(result) else None

    async def release_probe(
        self,
        org_id: str,
        owner: str,
        *,
        next_probe_at: datetime | None,
        outcome: str,
        detail: Mapping[str, object] | None = None,
    ) -> bool:
        """Give the probe slot back; with ``next_probe_at`` the pause waits until then
        (maintenance again, or an inconclusive answer); logs ``write_pause_probe``."""
        now = self._clock.now()
        values: dict[str, object] = {
            "pause_probe_owner": None,
            "pause_probe_until": None,
            "updated_at": now,
        }
        if next_probe_at is not None:
            values["writes_paused_until"] = next_probe_at
        async with self._db.write() as session:
            result = await session.execute(
                update(OrgStateRow)
                .where(OrgStateRow.org_id == org_id, OrgStateRow.pause_probe_owner == owner)
                .values(**values)
            )
            hit = bool(rowcount(result))
            if hit and outcome != "abandoned":
                await self.log_probe(session, org_id, outcome, detail)
        return hit

    async def log_probe(
        self,
        session: AsyncSession,
        org_id: str,
        outcome: str,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """One ``write_pause_probe`` operation-log entry (the ended event counts them)."""
        await self._operations.log(
            "write_pause_probe",
            outcome=outcome,
            org_id=org_id,
            detail=dict(detail or {}),
            session=session,
        )

    # -- the spike episode (fenced, in the caller's transaction) ----------------------------

    async def open_spike(self, session: AsyncSession, org_id: str, *, now: datetime) -> bool:
        """Open the org's spike episode unless one is open: True when this call opened it."""
        await self._ensure_row(session, org_id)
        result = await session.execute(
            update(OrgStateRow)
            .where(OrgStateRow.org_id == org_id, OrgStateRow.spike_started_at.is_(None))
            .values(spike_started_at=now, updated_at=now)
        )
        return bool(rowcount(result))

    async def close_spike(
        self, session: AsyncSession, org_id: str, *, now: datetime
    ) -> datetime | None:
        """Close the org's open episode: its start, or ``None`` if none was open."""
        started = await session.scalar(
            select(OrgStateRow.spike_started_at).where(OrgStateRow.org_id == org_id)
        )
        if started is None:
            return None
        result = await session.execute(
            update(OrgStateRow)
            .where(OrgStateRow.org_id == org_id, OrgStateRow.spike_started_at == started)
            .values(spike_started_at=None, updated_at=now)
        )
        return started if rowcount(result) else None

    # -- API usage -------------------------------------------------------------------------

    async def remember_limits(self, seen: Mapping[str, tuple[str, datetime]]) -> None:
        """Store each org's last ``Sforce-Limit-Info`` (value, when seen), newer wins."""
        if not seen:
            return
        async with self._db.write() as session:
            for org_id in sorted(seen):  # one lock order for every gateway
                value, at = seen[org_id]
                await self._ensure_row(session, org_id)
                await session.execute(
                    update(OrgStateRow)
                    .where(
                        OrgStateRow.org_id == org_id,
                        or_(
                            OrgStateRow.last_limit_info_at.is_(None),
                            OrgStateRow.last_limit_info_at <= at,
                        ),
                    )
                    .values(last_limit_info=value[:200], last_limit_info_at=at)
                )

    # -- the learned session timeout ------------------------------------------------------

    async def learned_timeout(self, org_id: str) -> float | None:
        """The org's learned session timeout in seconds as stored (before regrowth)."""
        learned = await self.learned_estimate(org_id)
        return learned.seconds if learned is not None else None

    async def learned_estimate(self, org_id: str) -> LearnedTimeout | None:
        """The org's learned session timeout, when it was learned and from how many
        samples; None when nothing was learned."""
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(
                        OrgStateRow.session_timeout_estimate_seconds,
                        OrgStateRow.session_timeout_learned_at,
                        OrgStateRow.session_timeout_samples,
                        OrgStateRow.updated_at,
                    ).where(OrgStateRow.org_id == org_id)
                )
            ).first()
        if row is None or not row[0]:
            return None
        return LearnedTimeout(float(row[0]), row[1] or row[3], int(row[2] or 0))

    async def store_learned_timeout(self, org_id: str, seconds: float) -> None:
        """Store ``seconds`` as the org's learned timeout, learned now (one more sample),
        with an ``expiry_learned`` operation-log entry in the same transaction. The caller
        (the lifecycle) has checked it is shorter than the current estimate."""
        now = self._clock.now()
        try:
            async with self._db.write() as session:
                row = await session.get(OrgStateRow, org_id)
                if row is None:
                    session.add(
                        OrgStateRow(
                            org_id=org_id,
                            session_timeout_estimate_seconds=int(seconds),
                            session_timeout_learned_at=now,
                            session_timeout_samples=1,
                            updated_at=now,
                        )
                    )
                else:
                    row.session_timeout_estimate_seconds = int(seconds)
                    row.session_timeout_learned_at = now
                    row.session_timeout_samples = (row.session_timeout_samples or 0) + 1
                    row.updated_at = now
                await self._operations.log(
                    "expiry_learned",
                    outcome="ok",
                    org_id=org_id,
                    detail={"session_timeout_estimate_seconds": int(seconds)},
                    session=session,
                )
        except sa_exc.IntegrityError:
            pass  # another process inserted the org's row at the same moment: it learned too
