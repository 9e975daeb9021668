"""Call counts per org, integration and time bucket (``org_call_counts``), shared by every
gateway: each adds its in-memory counts here periodically (org health, ``tokenkeep.orgs``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import OrgCallCountRow
from tokenkeep.store.records import BucketCounts

__all__ = ["OrgCallCountRepository"]


class OrgCallCountRepository:
    """Add, read and prune ``org_call_counts``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, counts: Iterable[BucketCounts]) -> None:
        """Add each bucket's counts to the stored ones (creating the row if needed), in one
        transaction. Rows are taken in primary-key order, so two gateways adding to the
        same buckets queue on their row locks instead of deadlocking."""
        merged: dict[tuple[str, str, datetime], BucketCounts] = {}
        for item in counts:
            key = (item.org_id, item.integration_key, item.bucket_start)
            old = merged.get(key)
            if old is None:
                merged[key] = item
                continue
            causes = dict(old.causes)
            for cause, n in item.causes.items():
                causes[cause] = causes.get(cause, 0) + n
            merged[key] = BucketCounts(
                *key, old.calls + item.calls, old.session_errors + item.session_errors, causes
            )
        if not merged:
            return
        keys = sorted(merged)
        insert = pg_insert if self._db.dialect == "postgresql" else sqlite_insert
        async with self._db.write() as session:
            await session.execute(
                insert(OrgCallCountRow)
                .values(
                    [
                        {
                            "org_id": org,
                            "integration_key": integration,
                            "bucket_start": bucket,
                            "calls": 0,
                            "session_errors": 0,
                            "causes": {},
                        }
                        for org, integration, bucket in keys
                    ]
                )
                .on_conflict_do_nothing()
            )
            query = (
                select(OrgCallCountRow)
                .where(
                    tuple_(
                        OrgCallCountRow.org_id,
                        OrgCallCountRow.integration_key,
                        OrgCallCountRow.bucket_start,
                    ).in_(keys)
                )
                .order_by(
                    OrgCallCountRow.org_id,
                    OrgCallCountRow.integration_key,
                    OrgCallCountRow.bucket_start,
                )
            )
            if self._db.dialect == "postgresql":
                query = query.with_for_update()
            for row in await session.scalars(query):
                add = merged[(row.org_id, row.integration_key, row.bucket_start)]
                row.calls += add.calls
                row.session_errors += add.session_errors
                causes = dict(row.causes or {})
                for cause, n in add.causes.items():
                    causes[cause] = int(causes.get(cause, 0)) + n
                row.causes = causes

    async def since(
        self,
        since: datetime,
        *,
        org_ids: list[str] | None = None,
        integration: str | None = None,
    ) -> list[BucketCounts]:
        """Every bucket starting at or after ``since`` (of ``org_ids``, of ``integration``)."""
        query = select(OrgCallCountRow).where(OrgCallCountRow.bucket_start >= since)
        if org_ids is not None:
            if not org_ids:
                return []
            query = query.where(OrgCallCountRow.org_id.in_(org_ids))
        if integration is not None:
            query = query.where(OrgCallCountRow.integration_key == integration)
        async with self._db.read() as session:
            rows = await session.scalars(query)
            return [
                BucketCounts(
                    r.org_id,
                    r.integration_key,
                    r.bucket_start,
                    r.calls,
                    r.session_errors,
                    {str(k): int(v) for k, v in (r.causes or {}).items()},
                )
                for r in rows
            ]

    async def prune(self, before: datetime) -> int:
        """Delete buckets that started before ``before``; returns how many."""
        async with self._db.write() as session:
            result = await session.execute(
                delete(OrgCallCountRow).where(OrgCallCountRow.bucket_start < before)
            )
        return rowcount(result)
