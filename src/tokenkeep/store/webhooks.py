"""Webhook endpoints: URL, event filter and the signing secret, encrypted.

The secret (``whsec_...``) is encrypted with the store's keyring, bound to the endpoint
(row id = endpoint id, field ``webhook_endpoints.secret``), and handed out only as a
:class:`~tokenkeep.secret.Secret` when asked for (the sender signs with it; ``POST
/webhooks`` shows it once). The endpoint of ``TOKENKEEP_WEBHOOK_URL`` has the id
``settings`` and is written by :meth:`WebhookEndpointRepository.sync_settings_endpoint`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy import exc as sa_exc

from tokenkeep.clock import Clock
from tokenkeep.crypto import Keyring
from tokenkeep.errors import ConflictError, NotFoundError
from tokenkeep.secret import Secret
from tokenkeep.store.database import Database
from tokenkeep.store.models import WebhookEndpointRow

__all__ = [
    "SECRET_FIELD",
    "SETTINGS_ENDPOINT_ID",
    "WebhookEndpoint",
    "WebhookEndpointRepository",
    "new_endpoint_id",
]

SECRET_FIELD = "webhook_endpoints.secret"
SETTINGS_ENDPOINT_ID = "settings"


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """An endpoint; ``secret`` only when asked for (``with_secret=True``)."""

    id: str
    url: str
    events: tuple[str, ...] | None  # None: every event type
    description: str | None
    source: str  # "api" | "settings"
    created_at: datetime
    updated_at: datetime
    secret: Secret | None = None

    def wants(self, event_type: str) -> bool:
        """True when this endpoint subscribes to ``event_type``."""
        return self.events is None or event_type in self.events


def new_endpoint_id() -> str:
    """A generated endpoint id (``we_`` + 16 hex characters)."""
    return "we_" + secrets.token_hex(8)


class WebhookEndpointRepository:
    """Create, read, list and delete webhook endpoints."""

    def __init__(self, db: Database, keyring: Keyring, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def create(
        self,
        *,
        url: str,
        secret: Secret,
        events: list[str] | None = None,
        description: str | None = None,
    ) -> WebhookEndpoint:
        """Store a new endpoint (source ``api``); the record carries no secret."""
        endpoint_id = new_endpoint_id()
        now = self._clock.now()
        row = WebhookEndpointRow(
            id=endpoint_id,
            url=url,
            events=sorted(set(events)) if events else None,
            description=description,
            source="api",
            secret_enc=self._keyring.encrypt(
                secret.reveal(), row_id=endpoint_id, field=SECRET_FIELD
            ),
            key_id=self._keyring.primary_key_id,
            created_at=now,
            updated_at=now,
        )
        async with self._db.write() as session:
            session.add(row)
        return self._record(row, with_secret=False)

    async def get(self, endpoint_id: str, *, with_secret: bool = False) -> WebhookEndpoint:
        """One endpoint (``NotFoundError`` if unknown)."""
        async with self._db.read() as session:
            row = await session.get(WebhookEndpointRow, endpoint_id)
            if row is None:
                raise NotFoundError(f"webhook endpoint {endpoint_id!r} does not exist")
            return self._record(row, with_secret=with_secret)

    async def list(self, *, with_secrets: bool = False) -> list[WebhookEndpoint]:
        """Every endpoint, oldest first."""
        async with self._db.read() as session:
            rows = (
                await session.scalars(
                    select(WebhookEndpointRow).order_by(
                        WebhookEndpointRow.created_at, WebhookEndpointRow.id
                    )
                )
            ).all()
            return [self._record(r, with_secret=with_secrets) for r in rows]

    async def delete(self, endpoint_id: str) -> None:
        """Delete an endpoint and its deliveries (``NotFoundError`` if unknown;
        ``ConflictError`` for the endpoint of ``TOKENKEEP_WEBHOOK_URL``)."""
        if endpoint_id == SETTINGS_ENDPOINT_ID:
            raise ConflictError(
                "this endpoint comes from TOKENKEEP_WEBHOOK_URL: unset that variable (and "
                "restart) to remove it"
            )
        async with self._db.write() as session:
            result = await session.execute(
                delete(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint_id)
            )
            if not getattr(result, "rowcount", 0):
                raise NotFoundError(f"webhook endpoint {endpoint_id!r} does not exist")

    async def sync_settings_endpoint(self, url: str | None, secret: Secret | None) -> None:
        """Make the ``settings`` endpoint match ``TOKENKEEP_WEBHOOK_URL`` / ``_SECRET``:
        created or updated in place when set (its deliveries kept), deleted (with its
        deliveries) when unset. Gateways starting at once: the first insert wins."""
        now = self._clock.now()
        try:
            async with self._db.write() as session:
                row = await session.get(WebhookEndpointRow, SETTINGS_ENDPOINT_ID)
                if url is None or secret is None:
                    if row is not None:
                        await session.delete(row)
                    return
                secret_enc = self._keyring.encrypt(
                    secret.reveal(), row_id=SETTINGS_ENDPOINT_ID, field=SECRET_FIELD
                )
                if row is None:
                    session.add(
                        WebhookEndpointRow(
                            id=SETTINGS_ENDPOINT_ID,
                            url=url,
                            events=None,
                            description="TOKENKEEP_WEBHOOK_URL",
                            source="settings",
                            secret_enc=secret_enc,
                            key_id=self._keyring.primary_key_id,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    return
                stored = self._keyring.decrypt(
                    row.secret_enc, row_id=SETTINGS_ENDPOINT_ID, field=SECRET_FIELD
                )
                if row.url != url or stored != secret.reveal():
                    row.url = url
                    row.secret_enc = secret_enc
                    row.key_id = self._keyring.primary_key_id
                    row.updated_at = now
        except sa_exc.IntegrityError:
            return  # another gateway inserted it at the same moment, from the same settings

    def _record(self, row: WebhookEndpointRow, *, with_secret: bool) -> WebhookEndpoint:
        secret = (
            Secret(self._keyring.decrypt(row.secret_enc, row_id=row.id, field=SECRET_FIELD))
            if with_secret
            else None
        )
        return WebhookEndpoint(
            id=row.id,
            url=row.url,
            events=tuple(row.events) if row.events else None,
            description=row.description,
            source=row.source,
            created_at=row.created_at,
            updated_at=row.updated_at,
            secret=secret,
        )
