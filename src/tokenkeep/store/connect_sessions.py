"""Hosted-connect sessions: single-use links, their ``state`` and PKCE verifier.

Only hashes of the link token and of ``state`` are stored; the PKCE verifier is encrypted,
bound to the session (row id = ``token_hash``, field ``connect_sessions.code_verifier``).
Consuming is a conditional ``UPDATE … WHERE used_at IS NULL`` that must hit the row: two
concurrent callbacks may both have read it unused (PostgreSQL, READ COMMITTED); only one
consumes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select, update

from tokenkeep.clock import Clock
from tokenkeep.crypto import Keyring
from tokenkeep.secret import Secret
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import ConnectSessionRow
from tokenkeep.store.records import ConnectSession

__all__ = ["CODE_VERIFIER_FIELD", "ConnectSessionRepository"]

_S = cast(Table, ConnectSessionRow.__table__)
CODE_VERIFIER_FIELD = "connect_sessions.code_verifier"


class ConnectSessionRepository:
    """Create, bind, find and consume connect sessions."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def create(
        self,
        token_hash: str,
        *,
        integration_key: str,
        connection_id: str | None,
        metadata: dict[str, Any],
        return_url: str | None,
        expires_at: datetime,
    ) -> None:
        """Store a new, unbound session."""
        async with self._db.write() as session:
            session.add(
                ConnectSessionRow(
                    token_hash=token_hash,
                    integration_key=integration_key,
                    connection_id=connection_id,
                    metadata_=dict(metadata),
                    return_url=return_url,
                    state_hash=None,
                    code_verifier_enc=None,
                    key_id=None,
                    expires_at=expires_at,
                    used_at=None,
                    created_at=self._clock.now(),
                )
            )

    async def find(self, token_hash: str) -> ConnectSession | None:
        """The session of a link token's hash, or None."""
        async with self._db.read() as session:
            row = (
                await session.execute(select(_S).where(_S.c.token_hash == token_hash))
            ).one_or_none()
        return self._record(row) if row is not None else None

    async def bind(self, token_hash: str, *, state_hash: str, code_verifier: str) -> bool:
        """Bind a fresh ``state`` and verifier to an unused session (the newest tab wins).
        False when the session is used (or gone)."""
        async with self._db.write() as session:
            result = await session.execute(
                update(_S)
                .where(_S.c.token_hash == token_hash, _S.c.used_at.is_(None))
                .values(
                    state_hash=state_hash,
                    code_verifier_enc=self._keyring.encrypt(
                        code_verifier, row_id=token_hash, field=CODE_VERIFIER_FIELD
                    ),
                    key_id=self._keyring.primary_key_id,
                )
            )
            return rowcount(result) == 1

    async def consume(self, token_hash: str, *, now: datetime) -> bool:
        """Mark an unused session used; False when it already was (a replay)."""
        async with self._db.write() as session:
            result = await session.execute(
                update(_S)
                .where(_S.c.token_hash == token_hash, _S.c.used_at.is_(None))
                .values(used_at=now)
            )
            return rowcount(result) == 1

    async def consume_by_state(
        self, state_hash: str, *, now: datetime
    ) -> tuple[ConnectSession | None, bool]:
        """The session bound to ``state_hash`` as it was read, and whether this call
        consumed it (one transaction). It is consumed only if it was unused and not
        expired at ``now``; ``(None, False)`` when no session has that state."""
        async with self._db.write() as session:
            row = (
                await session.execute(select(_S).where(_S.c.state_hash == state_hash))
            ).one_or_none()
            if row is None:
                return None, False
            record = self._record(row)
            if record.used_at is not None or record.expires_at <= now:
                return record, False
            result = await session.execute(
                update(_S)
                .where(_S.c.token_hash == row.token_hash, _S.c.used_at.is_(None))
                .values(used_at=now)
            )
            return record, rowcount(result) == 1

    def _record(self, row: Any) -> ConnectSession:
        verifier = (
            Secret(
                self._keyring.decrypt(
                    row.code_verifier_enc, row_id=row.token_hash, field=CODE_VERIFIER_FIELD
                )
            )
            if row.code_verifier_enc
            else None
        )
        return ConnectSession(
            token_hash=row.token_hash,
            integration_key=row.integration_key,
            connection_id=row.connection_id,
            metadata=dict(row._mapping["metadata"] or {}),
            return_url=row.return_url,
            expires_at=row.expires_at,
            used_at=row.used_at,
            code_verifier=verifier,
        )
