"""Per-org state shared by every gateway: the learned session timeout."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database
from tokenkeep.store.models import OrgStateRow
from tokenkeep.store.operations import OperationLog

__all__ = ["OrgStateRepository"]


class OrgStateRepository:
    """Read and shorten an org's learned session timeout (``org_state``)."""

    def __init__(self, db: Database, clock: Clock, operations: OperationLog) -> None:
        self._db = db
        self._clock = clock
        self._operations = operations

    async def learned_timeout(self, org_id: str) -> float | None:
        """The org's learned session timeout in seconds, if any."""
        async with self._db.read() as session:
            value = await session.scalar(
                select(OrgStateRow.session_timeout_estimate_seconds).where(
                    OrgStateRow.org_id == org_id
                )
            )
        return float(value) if value else None

    async def shorten_learned_timeout(self, org_id: str, seconds: float) -> None:
        """Store ``seconds`` as the org's learned timeout unless a shorter one is stored,
        with an ``expiry_learned`` operation-log entry in the same transaction."""
        now = self._clock.now()
        try:
            async with self._db.write() as session:
                row = await session.get(OrgStateRow, org_id)
                if row is None:
                    session.add(
                        OrgStateRow(
                            org_id=org_id,
                            session_timeout_estimate_seconds=int(seconds),
                            updated_at=now,
                        )
                    )
                else:
                    current = row.session_timeout_estimate_seconds
                    if current is None or seconds < current:
                        row.session_timeout_estimate_seconds = int(seconds)
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
