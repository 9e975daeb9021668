"""Per-org state shared by every gateway: the learned session timeout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database
from tokenkeep.store.models import OrgStateRow
from tokenkeep.store.operations import OperationLog

__all__ = ["LearnedTimeout", "OrgStateRepository"]


@dataclass(frozen=True, slots=True)
class LearnedTimeout:
    """An org's learned session timeout (seconds), when it was learned, from how many
    samples."""

    seconds: float
    learned_at: datetime
    samples: int


class OrgStateRepository:
    """An org's learned session timeout (``org_state``)."""

    def __init__(self, db: Database, clock: Clock, operations: OperationLog) -> None:
        self._db = db
        self._clock = clock
        self._operations = operations

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
