"""Import a connection from tokens an app already holds: the use case behind
``POST /connections`` and ``tokenkeep connections import``.

Both callers validate the shape of their input first (the control API's request schema);
this module checks what needs the store and the settings, estimates when the token dies,
and stores the connection with its ``connection.created`` event in one transaction.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.clock import utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.errors import ValidationError
from tokenkeep.lifecycle.expiry import plan_expiry
from tokenkeep.secret import Secret
from tokenkeep.store import Store
from tokenkeep.store.connections import ConnectionInput
from tokenkeep.store.records import Connection
from tokenkeep.urls import upstream_url_problem
from tokenkeep.vocabulary import EventType

__all__ = ["ConnectionToImport", "create_imported_connection", "parse_identity_url"]

_SF_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


@dataclass(frozen=True, slots=True)
class ConnectionToImport:
    """Tokens the app already holds (a Salesforce token response, or part of it).

    ``issued_at`` is Salesforce's: epoch milliseconds, usually as a string. ``connection_id``
    ``None`` lets the store pick one.
    """

    integration: str
    access_token: Secret
    instance_url: str
    refresh_token: Secret | None = None
    id_url: str | None = None
    issued_at: int | str | None = None
    connection_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


# Spreads the first proactive refresh of connections imported together.
_RNG = random.SystemRandom()


def parse_identity_url(url: str | None) -> tuple[str | None, str | None]:
    """``(org_id, user_id)`` from a Salesforce identity URL ``.../id/<org>/<user>``.

    Anything that does not look like one gives ``(None, None)``: the identity URL is a
    hint, and a connection without it is still usable.
    """
    if not url:
        return None, None
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) >= 3 and parts[-3] == "id":
        org, user = parts[-2], parts[-1]
        if _SF_ID.match(org) and _SF_ID.match(user):
            return org, user
    return None, None


def _issued_at(value: int | str | None) -> datetime | None:
    # Salesforce's issued_at is epoch milliseconds, as a string. It is the provider's
    # clock: kept as a record, never compared with ours to decide anything.
    if value is None:
        return None
    return utc_from_timestamp(int(value) / 1000)


def _imported_expiry(
    now: float, issued_at: int | str | None, session_timeout: int, settings: Settings
) -> tuple[datetime | None, datetime | None]:
    """When an imported token dies, as far as we can know without asking Salesforce.

    With ``issued_at``, the token is assumed to live the integration's session timeout
    from then: the provider's timestamp may only *shorten* that life (a provider clock
    ahead of ours never makes a token outlive ``now + timeout``). Without it the age is
    unknown, so nothing is assumed and the first use refreshes (and learns the real expiry).
    """
    if issued_at is None:
        return None, None
    plan = plan_expiry(
        now,
        configured=float(session_timeout),
        age=max(0.0, now - int(issued_at) / 1000),
        margin=settings.refresh_margin_seconds,
        rng=_RNG,
    )
    return plan.expires_at, plan.next_refresh_at


async def create_imported_connection(
    store: Store, settings: Settings, spec: ConnectionToImport
) -> Connection:
    """Validate and store an imported connection.

    Raises :class:`~tokenkeep.errors.ValidationError` (422) for an ``instance_url`` that may
    not receive tokens, :class:`~tokenkeep.errors.NotFoundError` (404) for an unknown
    integration and a conflict (409) for a connection id already in use.
    """
    problem = upstream_url_problem(
        spec.instance_url, allow_insecure_loopback=settings.allow_insecure_loopback
    )
    if problem is not None:
        raise ValidationError(f"credentials.instance_url: {problem}.")
    org_id, user_id = parse_identity_url(spec.id_url)
    integration = await store.integrations.get(spec.integration)  # 404 before anything
    expires_at, refresh_at = _imported_expiry(
        store.clock.time(), spec.issued_at, integration.session_timeout_seconds, settings
    )

    def created_event(session: AsyncSession, connection: Connection) -> None:
        # The same event, in the same transaction, as the connect flow's new connection.
        store.outbox.add_event(
            session,
            EventType.CONNECTION_CREATED,
            connection_id=connection.id,
            org_id=connection.org_id or None,
            payload={
                "connection_id": connection.id,
                "org_id": connection.org_id or None,
                "integration": connection.integration_key,
                "metadata": dict(connection.metadata),
            },
        )
        store.operations.add(
            session,
            "import",
            outcome="ok",
            connection_id=connection.id,
            org_id=connection.org_id or None,
            detail={
                "integration": connection.integration_key,
                "user_id": connection.user_id or None,
                "instance_url": connection.instance_url,
                "expires_at": connection.expires_at.isoformat() if connection.expires_at else None,
                "access_token_fp": spec.access_token.fingerprint,
                "refresh_token_fp": spec.refresh_token.fingerprint
                if spec.refresh_token is not None
                else None,
            },
        )

    return await store.connections.create(
        ConnectionInput(
            id=spec.connection_id,
            integration_key=spec.integration,
            org_id=org_id or "",
            user_id=user_id or "",
            instance_url=spec.instance_url,
            id_url=spec.id_url,
            access_token=spec.access_token,
            refresh_token=spec.refresh_token,
            issued_at=_issued_at(spec.issued_at),
            expires_at=expires_at,
            next_refresh_at=refresh_at,
            metadata=spec.metadata,
        ),
        also=created_event,
    )
