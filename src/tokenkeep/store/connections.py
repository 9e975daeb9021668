"""Connections: create, read, list, delete and the compare-and-swap token update.

The rows' token columns are encrypted and decrypted by
:mod:`tokenkeep.store.connection_tokens`; the lifecycle's fenced writes are
:mod:`tokenkeep.store.refresh_state`'s.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.clock import Clock
from tokenkeep.crypto import Keyring
from tokenkeep.errors import ConflictError, NotFoundError, ValidationError
from tokenkeep.secret import Secret
from tokenkeep.store.connection_tokens import credentials_of, stored_refresh_token, token_columns
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import ConnectionRow, IntegrationRow
from tokenkeep.store.records import (
    CONNECTION_STATUSES,
    Connection,
    ConnectionCredentials,
    ConnectionPage,
)
from tokenkeep.store.sentinel import KEEP, Keep

__all__ = ["ConnectionInput", "ConnectionRepository", "new_connection_id"]

MAX_PAGE = 500


def new_connection_id() -> str:
    """A generated connection id (``conn_`` + 20 base32-ish characters)."""
    return "conn_" + secrets.token_hex(10)


@dataclass(slots=True)
class ConnectionInput:
    """What :meth:`ConnectionRepository.create` stores (an import or a finished connect)."""

    integration_key: str
    org_id: str
    user_id: str
    instance_url: str
    access_token: str | Secret
    refresh_token: str | Secret | None = None
    id: str | None = None
    username: str | None = None
    id_url: str | None = None
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    next_refresh_at: datetime | None = None
    issued_to_address: str | None = None
    status: str = "active"
    status_reason: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _given(**fields: object) -> dict[str, object]:
    """The fields whose value is not :data:`KEEP`."""
    return {name: value for name, value in fields.items() if not isinstance(value, Keep)}


def _check_status(status: str) -> None:
    if status not in CONNECTION_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(CONNECTION_STATUSES)}")


def encode_cursor(created_at: datetime, conn_id: str) -> str:
    """An opaque pagination cursor after ``(created_at, id)``."""
    raw = json.dumps([created_at.isoformat(), conn_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Inverse of :func:`encode_cursor`; ``ValidationError`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, conn_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None or not isinstance(conn_id, str):
            raise ValueError
    except (binascii.Error, ValueError, TypeError, json.JSONDecodeError):
        raise ValidationError("cursor is not a cursor returned by this API") from None
    return when, conn_id


class ConnectionRepository:
    """Create, read, list, delete and compare-and-swap update connections."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def create(
        self,
        data: ConnectionInput,
        *,
        also: Callable[[AsyncSession, Connection], None] | None = None,
    ) -> Connection:
        """Store a new connection (``ConflictError`` if the id exists, ``NotFoundError``
        for an unknown integration).

        ``also(session, connection)`` runs inside the same transaction once the row is
        written (e.g. an outbox event): both commit, or neither does.
        """
        _check_status(data.status)
        conn_id = data.id or new_connection_id()
        now = self._clock.now()
        row = ConnectionRow(
            id=conn_id,
            integration_key=data.integration_key,
            org_id=data.org_id,
            user_id=data.user_id,
            username=data.username,
            instance_url=data.instance_url,
            id_url=data.id_url,
            status=data.status,
            status_reason=data.status_reason,
            version=1,
            issued_at=data.issued_at,
            expires_at=data.expires_at,
            next_refresh_at=data.next_refresh_at,
            refresh_attempts=0,
            last_refresh_at=None,
            last_error=None,
            issued_to_address=data.issued_to_address,
            lease_owner=None,
            lease_until=None,
            metadata_=dict(data.metadata),
            created_at=now,
            updated_at=now,
            **token_columns(self._keyring, conn_id, data.access_token, data.refresh_token),
        )
        try:
            async with self._db.write() as session:
                if await session.get(IntegrationRow, data.integration_key) is None:
                    raise NotFoundError(f"integration {data.integration_key!r} does not exist")
                if await session.get(ConnectionRow, conn_id) is not None:
                    raise ConflictError(f"connection {conn_id!r} already exists")
                session.add(row)
                await session.flush()
                record = self._to_record(row, with_credentials=False)
                if also is not None:
                    also(session, record)
                return record
        except sa_exc.IntegrityError:
            # Two creators raced past the existence check: the primary key decides.
            raise ConflictError(f"connection {conn_id!r} already exists") from None

    async def get(self, conn_id: str, *, with_credentials: bool = False) -> Connection:
        """One connection (``NotFoundError`` if unknown); tokens only when asked."""
        async with self._db.read() as session:
            row = await session.get(ConnectionRow, conn_id)
            if row is None:
                raise NotFoundError(f"connection {conn_id!r} does not exist")
            return self._to_record(row, with_credentials=with_credentials)

    async def list(
        self,
        *,
        integration: str | None = None,
        status: str | None = None,
        org_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ConnectionPage:
        """A page of connections, oldest first, filtered; pass ``next_cursor`` back for more."""
        if status is not None:
            _check_status(status)
        limit = max(1, min(limit, MAX_PAGE))
        query = select(ConnectionRow)
        if integration is not None:
            query = query.where(ConnectionRow.integration_key == integration)
        if status is not None:
            query = query.where(ConnectionRow.status == status)
        if org_id is not None:
            query = query.where(ConnectionRow.org_id == org_id)
        if cursor is not None:
            after_at, after_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    ConnectionRow.created_at > after_at,
                    and_(ConnectionRow.created_at == after_at, ConnectionRow.id > after_id),
                )
            )
        query = query.order_by(ConnectionRow.created_at, ConnectionRow.id).limit(limit + 1)
        async with self._db.read() as session:
            rows = list((await session.scalars(query)).all())
        more = len(rows) > limit
        rows = rows[:limit]
        items = [self._to_record(r, with_credentials=False) for r in rows]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
        return ConnectionPage(items=items, next_cursor=next_cursor)

    async def delete(self, conn_id: str) -> None:
        """Delete a connection (``NotFoundError`` if unknown)."""
        async with self._db.write() as session:
            result = await session.execute(delete(ConnectionRow).where(ConnectionRow.id == conn_id))
            if not rowcount(result):
                raise NotFoundError(f"connection {conn_id!r} does not exist")

    async def update_credentials(
        self,
        conn_id: str,
        expected_version: int,
        *,
        access_token: str | Secret,
        refresh_token: str | Secret | Keep | None = KEEP,
        issued_at: datetime | Keep | None = KEEP,
        expires_at: datetime | Keep | None = KEEP,
        next_refresh_at: datetime | Keep | None = KEEP,
        instance_url: str | Keep = KEEP,
        issued_to_address: str | Keep | None = KEEP,
        status: str = "active",
        status_reason: str | None = None,
    ) -> bool:
        """Compare-and-swap the tokens: ``False`` (nothing written) if ``version`` moved.

        On success ``version`` is bumped, ``refresh_attempts``/``last_error`` reset and
        ``last_refresh_at`` set. The whole row is re-encrypted with the primary key.
        ``NotFoundError`` if the connection is gone.
        """
        _check_status(status)
        now = self._clock.now()
        async with self._db.write() as session:
            row = await session.scalar(
                select(ConnectionRow).where(ConnectionRow.id == conn_id).with_for_update()
            )
            if row is None:
                raise NotFoundError(f"connection {conn_id!r} does not exist")
            if row.version != expected_version:
                return False
            kept = (
                stored_refresh_token(self._keyring, row)
                if isinstance(refresh_token, Keep)
                else refresh_token
            )
            values: dict[str, Any] = {
                **token_columns(self._keyring, conn_id, access_token, kept),
                "version": expected_version + 1,
                "status": status,
                "status_reason": status_reason,
                "refresh_attempts": 0,
                "last_error": None,
                "last_refresh_at": now,
                "updated_at": now,
            }
            values.update(
                _given(
                    issued_at=issued_at,
                    expires_at=expires_at,
                    next_refresh_at=next_refresh_at,
                    instance_url=instance_url,
                    issued_to_address=issued_to_address,
                )
            )
            # The WHERE on version is the fence: on PostgreSQL the row lock above already
            # serializes writers, the predicate makes it hold on any isolation level.
            result = await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.id == conn_id, ConnectionRow.version == expected_version)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return bool(rowcount(result))

    async def set_status(
        self,
        conn_id: str,
        status: str,
        *,
        reason: str | None = None,
        last_error: str | Keep | None = KEEP,
        refresh_attempts: int | Keep = KEEP,
        next_refresh_at: datetime | Keep | None = KEEP,
    ) -> None:
        """Change status (and related bookkeeping) without touching tokens or ``version``."""
        _check_status(status)
        values: dict[str, Any] = {
            "status": status,
            "status_reason": reason,
            "updated_at": self._clock.now(),
        }
        values.update(
            _given(
                last_error=last_error,
                refresh_attempts=refresh_attempts,
                next_refresh_at=next_refresh_at,
            )
        )
        async with self._db.write() as session:
            result = await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.id == conn_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if not rowcount(result):
                raise NotFoundError(f"connection {conn_id!r} does not exist")

    async def note_used_from(self, conn_id: str, address: str) -> bool:
        """Record ``address`` as the connection's ``last_used_from_address``; True if it
        changed.

        Direct-mode clients fetch tokens all day: the guard in the ``WHERE`` clause makes the
        usual call (same address as last time) a write-free no-op, and leaves ``version`` and
        ``updated_at`` alone (this is bookkeeping, not a change of the connection).
        """
        async with self._db.write() as session:
            result = await session.execute(
                update(ConnectionRow)
                .where(
                    ConnectionRow.id == conn_id,
                    ConnectionRow.last_used_from_address.is_distinct_from(address),
                )
                .values(last_used_from_address=address)
                .execution_options(synchronize_session=False)
            )
            return bool(rowcount(result))

    # -- helpers --------------------------------------------------------------------------
    def credentials_of(self, row: ConnectionRow) -> ConnectionCredentials:
        """Decrypt a row's tokens (for code that queried :class:`ConnectionRow` itself)."""
        return credentials_of(self._keyring, row)

    def to_record(self, row: ConnectionRow, *, with_credentials: bool = False) -> Connection:
        """A :class:`Connection` from a row (public for lifecycle code with its own query)."""
        return self._to_record(row, with_credentials=with_credentials)

    def _to_record(self, row: ConnectionRow, *, with_credentials: bool) -> Connection:
        return Connection(
            id=row.id,
            integration_key=row.integration_key,
            org_id=row.org_id,
            user_id=row.user_id,
            username=row.username,
            instance_url=row.instance_url,
            id_url=row.id_url,
            status=row.status,
            status_reason=row.status_reason,
            version=row.version,
            has_refresh_token=row.refresh_token_enc is not None,
            refresh_token_fingerprint=row.refresh_token_fingerprint,
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            next_refresh_at=row.next_refresh_at,
            refresh_attempts=row.refresh_attempts,
            last_refresh_at=row.last_refresh_at,
            last_error=row.last_error,
            issued_to_address=row.issued_to_address,
            lease_owner=row.lease_owner,
            lease_until=row.lease_until,
            key_id=row.key_id,
            metadata=dict(row.metadata_),
            created_at=row.created_at,
            updated_at=row.updated_at,
            credentials=self.credentials_of(row) if with_credentials else None,
            last_used_from_address=row.last_used_from_address,
        )
