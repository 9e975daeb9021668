"""The lifecycle's writes to connection rows, each fenced by ``version``.

These take the caller's ``session`` so the lifecycle can write its outbox events and
operation-log entries in the same transaction (durable exactly when the change is):

* :meth:`RefreshStateRepository.commit_tokens` — the compare-and-swap of a refresh answer
  (``WHERE id=? AND version=?``), the write of "never lose a refresh token";
* :meth:`RefreshStateRepository.store_failure` — a failed attempt's verdict;
* :meth:`RefreshStateRepository.upsert_connected` — a finished connect: a new row, or a new
  grant on the connection it replaces (version bumped, so a refresh in flight on the old
  grant is fenced off).

Reads that the coordinator needs on its own are here too: :meth:`peek` (is a cached token
still current?) and :meth:`newer_connection_exists` (the 5-approval cap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.clock import Clock
from tokenkeep.crypto import Keyring
from tokenkeep.secret import Secret
from tokenkeep.store.connection_tokens import token_columns
from tokenkeep.store.connections import new_connection_id
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import ConnectionRow
from tokenkeep.store.records import Connection, RowState
from tokenkeep.vocabulary import Status

__all__ = ["Connected", "RefreshStateRepository"]

_T = cast(Table, ConnectionRow.__table__)


@dataclass(frozen=True, slots=True)
class Connected:
    """What :meth:`RefreshStateRepository.upsert_connected` wrote."""

    connection_id: str
    created: bool
    previous_status: str | None


class RefreshStateRepository:
    """Fenced writes and cheap reads of a connection's token state."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def peek(self, connection_id: str) -> RowState | None:
        """``(version, status, lease)`` of a row, or None when it is gone."""
        query = select(_T.c.version, _T.c.status, _T.c.lease_owner, _T.c.lease_until).where(
            _T.c.id == connection_id
        )
        async with self._db.read() as session:
            row = (await session.execute(query)).one_or_none()
        if row is None:
            return None
        return RowState(row.version, row.status, row.lease_owner, row.lease_until)

    async def newer_connection_exists(self, conn: Connection) -> bool:
        """Another connection of the same user and app, created later."""
        query = (
            select(_T.c.id)
            .where(
                _T.c.integration_key == conn.integration_key,
                _T.c.org_id == conn.org_id,
                _T.c.user_id == conn.user_id,
                _T.c.id != conn.id,
                _T.c.created_at > conn.created_at,
            )
            .limit(1)
        )
        async with self._db.read() as session:
            return (await session.execute(query)).first() is not None

    async def commit_tokens(
        self,
        session: AsyncSession,
        conn: Connection,
        *,
        access_token: Secret,
        refresh_token: Secret | None,
        columns: dict[str, Any],
    ) -> bool:
        """Compare-and-swap new tokens onto the row read at ``conn.version``: bumps the
        version, clears the lease and writes ``columns`` too. False (nothing written) when
        the version moved: a newer token is stored."""
        values = {
            **columns,
            **token_columns(self._keyring, conn.id, access_token, refresh_token),
            "version": conn.version + 1,
            "updated_at": self._clock.now(),
            "lease_owner": None,
            "lease_until": None,
        }
        result = await session.execute(
            update(_T).where(_T.c.id == conn.id, _T.c.version == conn.version).values(**values)
        )
        return rowcount(result) == 1

    async def store_failure(
        self, session: AsyncSession, conn: Connection, columns: dict[str, Any]
    ) -> str | None:
        """Write a failed attempt's ``columns`` on the row read at ``conn.version`` and
        clear the lease. Returns the status the row had, or None when the version moved
        (the failure is stale: nothing is written)."""
        current = (
            await session.execute(
                select(_T.c.status).where(_T.c.id == conn.id, _T.c.version == conn.version)
            )
        ).one_or_none()
        if current is None:
            return None
        values = {
            **columns,
            "updated_at": self._clock.now(),
            "lease_owner": None,
            "lease_until": None,
        }
        await session.execute(
            update(_T).where(_T.c.id == conn.id, _T.c.version == conn.version).values(**values)
        )
        return str(current.status)

    async def update_expiry(
        self, connection_id: str, version: int, *, expires_at: datetime, next_refresh_at: datetime
    ) -> bool:
        """Refine the expiry of the token stored at ``version`` (no-op if it was replaced)."""
        async with self._db.write() as session:
            result = await session.execute(
                update(_T)
                .where(_T.c.id == connection_id, _T.c.version == version)
                .values(expires_at=expires_at, next_refresh_at=next_refresh_at)
            )
            return rowcount(result) == 1

    async def upsert_connected(
        self,
        session: AsyncSession,
        *,
        integration_key: str,
        connection_id: str | None,
        update_existing: bool,
        metadata: dict[str, Any],
        access_token: Secret,
        refresh_token: Secret | None,
        columns: dict[str, Any],
    ) -> Connected:
        """Store a finished connect: the row ``connection_id`` names, else (with
        ``update_existing``) the newest row of the same integration + org + user, else a
        new row. ``columns`` holds ``org_id``, ``user_id``, ``instance_url``, expiry, etc.
        The row becomes ``active`` with a clean slate."""
        existing = None
        if connection_id:
            existing = (
                await session.execute(select(_T.c.id, _T.c.status).where(_T.c.id == connection_id))
            ).one_or_none()
        elif update_existing:
            existing = (
                await session.execute(
                    select(_T.c.id, _T.c.status)
                    .where(
                        _T.c.integration_key == integration_key,
                        _T.c.org_id == columns["org_id"],
                        _T.c.user_id == columns["user_id"],
                    )
                    .order_by(_T.c.created_at.desc())
                    .limit(1)
                )
            ).one_or_none()
        conn_id = existing.id if existing else (connection_id or new_connection_id())
        now = self._clock.now()
        values: dict[str, Any] = {
            **columns,
            **token_columns(self._keyring, conn_id, access_token, refresh_token),
            "status": Status.ACTIVE.value,
            "status_reason": None,
            "refresh_attempts": 0,
            "last_error": None,
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
        }
        if existing:
            await session.execute(
                update(_T).where(_T.c.id == conn_id).values(**values, version=_T.c.version + 1)
            )
            return Connected(conn_id, created=False, previous_status=str(existing.status))
        session.add(
            ConnectionRow(
                id=conn_id,
                integration_key=integration_key,
                version=1,
                last_refresh_at=None,
                metadata_=dict(metadata),
                created_at=now,
                **values,
            )
        )
        return Connected(conn_id, created=True, previous_status=None)
