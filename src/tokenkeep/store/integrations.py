"""Integrations: OAuth app configurations, their secrets encrypted at rest."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from tokenkeep.clock import Clock
from tokenkeep.crypto import Keyring
from tokenkeep.errors import ConflictError, NotFoundError, ValidationError
from tokenkeep.secret import Secret
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import ConnectionRow, IntegrationRow
from tokenkeep.store.records import Integration, IntegrationSecrets
from tokenkeep.store.sentinel import KEEP, Keep
from tokenkeep.vocabulary import AUTH_MODES, AuthMode

__all__ = ["IntegrationRepository"]

_CLIENT_SECRET = "integrations.client_secret"
_PRIVATE_KEY = "integrations.private_key"


def _reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


class IntegrationRepository:
    """CRUD over ``integrations``; ``client_secret`` and ``private_key`` are encrypted."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def put(
        self,
        key: str,
        *,
        provider: str = "salesforce",
        client_id: str,
        client_secret: str | Secret | Keep | None = KEEP,
        login_url: str,
        scopes: list[str] | None = None,
        auth_mode: str = "oauth2",
        private_key: str | Secret | Keep | None = KEEP,
        username: str | None = None,
        session_timeout_seconds: int = 7200,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[Integration, bool]:
        """Create or replace an integration; returns it and whether it was created.

        ``client_secret``/``private_key`` left as :data:`KEEP` keep the stored value on an
        update (and mean "none" on create); ``None`` clears it.
        """
        if auth_mode not in AUTH_MODES:
            raise ValidationError(f"auth_mode must be one of {', '.join(AUTH_MODES)}")
        now = self._clock.now()
        async with self._db.write() as session:
            row = await session.get(IntegrationRow, key)
            created = row is None
            if row is None:
                row = IntegrationRow(key=key, created_at=now)
                session.add(row)
                old_secret = old_key = None
            else:
                old_secret = self._decrypt(row.client_secret_enc, key, _CLIENT_SECRET)
                old_key = self._decrypt(row.private_key_enc, key, _PRIVATE_KEY)
            new_secret = old_secret if isinstance(client_secret, Keep) else client_secret
            new_key = old_key if isinstance(private_key, Keep) else private_key
            row.provider = provider
            row.client_id = client_id
            row.login_url = login_url
            row.scopes = list(scopes or [])
            row.auth_mode = auth_mode
            row.username = username
            row.session_timeout_seconds = session_timeout_seconds
            row.metadata_ = dict(metadata or {})
            row.updated_at = now
            # Every ciphertext of the row is (re)written with the primary key, so key_id
            # truthfully names the one key the row needs.
            row.client_secret_enc = self._encrypt(new_secret, key, _CLIENT_SECRET)
            row.private_key_enc = self._encrypt(new_key, key, _PRIVATE_KEY)
            row.key_id = self._keyring.primary_key_id
            await session.flush()
            return self._to_record(row, with_secrets=False), created

    async def get(self, key: str, *, with_secrets: bool = False) -> Integration:
        """One integration (``NotFoundError`` if unknown); secrets only when asked."""
        async with self._db.read() as session:
            row = await session.get(IntegrationRow, key)
            if row is None:
                raise NotFoundError(f"integration {key!r} does not exist")
            return self._to_record(row, with_secrets=with_secrets)

    async def list(self) -> list[Integration]:
        """Every integration, by key."""
        async with self._db.read() as session:
            rows = (
                await session.scalars(select(IntegrationRow).order_by(IntegrationRow.key))
            ).all()
            return [self._to_record(r, with_secrets=False) for r in rows]

    async def delete(self, key: str) -> None:
        """Delete an integration; ``ConflictError`` while connections still use it."""
        async with self._db.write() as session:
            used = await session.scalar(
                select(func.count()).where(ConnectionRow.integration_key == key)
            )
            if used:
                raise ConflictError(
                    f"integration {key!r} still has {used} connection(s); delete them first"
                )
            result = await session.execute(delete(IntegrationRow).where(IntegrationRow.key == key))
            if not rowcount(result):
                raise NotFoundError(f"integration {key!r} does not exist")

    # -- helpers --------------------------------------------------------------------------
    def _encrypt(self, value: str | Secret | None, key: str, field: str) -> str | None:
        if value is None:
            return None
        return self._keyring.encrypt(_reveal(value), row_id=key, field=field)

    def _decrypt(self, value: str | None, key: str, field: str) -> str | None:
        if value is None:
            return None
        return self._keyring.decrypt(value, row_id=key, field=field)

    def _to_record(self, row: IntegrationRow, *, with_secrets: bool) -> Integration:
        secrets = None
        if with_secrets:
            client_secret = self._decrypt(row.client_secret_enc, row.key, _CLIENT_SECRET)
            private_key = self._decrypt(row.private_key_enc, row.key, _PRIVATE_KEY)
            secrets = IntegrationSecrets(
                client_secret=Secret(client_secret) if client_secret is not None else None,
                private_key=Secret(private_key) if private_key is not None else None,
            )
        return Integration(
            key=row.key,
            provider=row.provider,
            client_id=row.client_id,
            login_url=row.login_url,
            scopes=list(row.scopes),
            auth_mode=AuthMode(row.auth_mode),
            username=row.username,
            session_timeout_seconds=row.session_timeout_seconds,
            metadata=dict(row.metadata_),
            has_client_secret=row.client_secret_enc is not None,
            has_private_key=row.private_key_enc is not None,
            created_at=row.created_at,
            updated_at=row.updated_at,
            secrets=secrets,
        )
