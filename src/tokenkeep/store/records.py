"""Plain values the repositories return (never live ORM objects).

Secrets appear only as :class:`~tokenkeep.secret.Secret` and only when a caller asked for
them (``with_credentials=True`` / ``with_secrets=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tokenkeep.secret import Secret

__all__ = [
    "AUTH_MODES",
    "CONNECTION_STATUSES",
    "ApiKey",
    "AuthMode",
    "Connection",
    "ConnectionCredentials",
    "ConnectionPage",
    "ConnectionStatus",
    "CreatedApiKey",
    "Integration",
    "IntegrationSecrets",
    "Operation",
]

ConnectionStatus = Literal["active", "needs_reauth", "action_required", "error"]
CONNECTION_STATUSES: tuple[str, ...] = ("active", "needs_reauth", "action_required", "error")
AuthMode = Literal["oauth2", "jwt_bearer", "client_credentials"]
AUTH_MODES: tuple[str, ...] = ("oauth2", "jwt_bearer", "client_credentials")


@dataclass(frozen=True, slots=True)
class IntegrationSecrets:
    """The decrypted secrets of an integration."""

    client_secret: Secret | None
    private_key: Secret | None


@dataclass(frozen=True, slots=True)
class Integration:
    """An OAuth app configuration. ``secrets`` is ``None`` unless asked for."""

    key: str
    provider: str
    client_id: str
    login_url: str
    scopes: list[str]
    auth_mode: str
    username: str | None
    session_timeout_seconds: int
    metadata: dict[str, Any]
    has_client_secret: bool
    has_private_key: bool
    created_at: datetime
    updated_at: datetime
    secrets: IntegrationSecrets | None = None


@dataclass(frozen=True, slots=True)
class ConnectionCredentials:
    """Decrypted tokens of a connection, with the row ``version`` they were read at."""

    access_token: Secret
    refresh_token: Secret | None
    version: int


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection's state. ``credentials`` is ``None`` unless asked for."""

    id: str
    integration_key: str
    org_id: str
    user_id: str
    username: str | None
    instance_url: str
    id_url: str | None
    status: str
    status_reason: str | None
    version: int
    has_refresh_token: bool
    refresh_token_fingerprint: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    next_refresh_at: datetime | None
    refresh_attempts: int
    last_refresh_at: datetime | None
    last_error: str | None
    issued_to_address: str | None
    lease_owner: str | None
    lease_until: datetime | None
    key_id: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    credentials: ConnectionCredentials | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    """One page of :meth:`ConnectionRepository.list`; ``next_cursor`` is ``None`` at the end."""

    items: list[Connection]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation-log entry."""

    id: int
    at: datetime
    kind: str
    connection_id: str | None
    org_id: str | None
    outcome: str
    cause: str | None
    status_code: int | None
    duration_ms: float | None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key (never its secret)."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class CreatedApiKey:
    """A just-created API key: ``secret`` (``tk_...``) is shown once and never stored."""

    key: ApiKey
    secret: Secret
