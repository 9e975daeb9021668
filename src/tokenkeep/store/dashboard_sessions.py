"""Dashboard logins, kept server-side (``dashboard_sessions``).

The browser's cookie holds a random token; the table holds only its SHA-256, the API key
the admin logged in with, the CSRF token of the session's forms, when it expires and one
flash message for the next page. Server-side rows (rather than a signed cookie) mean a
logout or a revoked API key ends the session at once, on every gateway process and host,
with no signing secret to share between them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from tokenkeep.clock import Clock
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import ApiKeyRow, DashboardSessionRow

__all__ = ["DashboardSession", "DashboardSessionRepository"]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """A live dashboard session (never the cookie's token itself)."""

    api_key_id: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime


class DashboardSessionRepository:
    """Create, read, flash and end dashboard sessions."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    async def create(self, api_key_id: str, *, lifetime_seconds: float) -> tuple[str, datetime]:
        """A new session for ``api_key_id``: ``(cookie token, expires_at)``.

        Expired sessions are deleted on the way (logins are rare: no background task)."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires_at = now + timedelta(seconds=lifetime_seconds)
        async with self._db.write() as session:
            await session.execute(
                delete(DashboardSessionRow).where(DashboardSessionRow.expires_at <= now)
            )
            session.add(
                DashboardSessionRow(
                    token_hash=_hash(token),
                    api_key_id=api_key_id,
                    csrf_token=secrets.token_urlsafe(32),
                    flash=None,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return token, expires_at

    async def get(self, token: str) -> DashboardSession | None:
        """The live session of ``token``: ``None`` when unknown, expired, or its API key
        was revoked."""
        if not token:
            return None
        digest = _hash(token)
        query = (
            select(DashboardSessionRow)
            .join(ApiKeyRow, ApiKeyRow.id == DashboardSessionRow.api_key_id)
            .where(
                DashboardSessionRow.token_hash == digest,
                DashboardSessionRow.expires_at > self._clock.now(),
                ApiKeyRow.revoked_at.is_(None),
            )
        )
        async with self._db.read() as session:
            row = await session.scalar(query)
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return DashboardSession(row.api_key_id, row.csrf_token, row.created_at, row.expires_at)

    async def set_flash(self, token: str, message: str) -> None:
        """Keep ``message`` for the next page this session shows."""
        async with self._db.write() as session:
            await session.execute(
                update(DashboardSessionRow)
                .where(DashboardSessionRow.token_hash == _hash(token))
                .values(flash=message[:2000])
            )

    async def pop_flash(self, token: str) -> str | None:
        """The flash message, removed (``None`` when there is none: no write then)."""
        digest = _hash(token)
        async with self._db.read() as session:
            message = await session.scalar(
                select(DashboardSessionRow.flash).where(DashboardSessionRow.token_hash == digest)
            )
        if message is None:
            return None
        async with self._db.write() as session:
            await session.execute(
                update(DashboardSessionRow)
                .where(DashboardSessionRow.token_hash == digest)
                .values(flash=None)
            )
        return message

    async def delete(self, token: str) -> bool:
        """End the session (logout); True if there was one."""
        async with self._db.write() as session:
            result = await session.execute(
                delete(DashboardSessionRow).where(DashboardSessionRow.token_hash == _hash(token))
            )
        return bool(rowcount(result))
