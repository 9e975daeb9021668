"""Plain values the repositories return (never live ORM objects).

Secrets appear only as :class:`~tokenkeep.secret.Secret` and only when a caller asked for
them (``with_credentials=True`` / ``with_secrets=True``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tokenkeep.secret import Secret
from tokenkeep.vocabulary import AUTH_MODES, CONNECTION_STATUSES, AuthMode, Status

__all__ = [
    "AUTH_MODES",
    "CONNECTION_STATUSES",
    "ApiKey",
    "AuthMode",
    "BucketCounts",
    "ConnectSession",
    "Connection",
    "ConnectionCredentials",
    "ConnectionPage",
    "ConnectionStatus",
    "CreatedApiKey",
    "Integration",
    "IntegrationSecrets",
    "LeaseGrant",
    "Operation",
    "OrgConnections",
    "OrgState",
    "RowState",
]

#: A connection's status (:class:`tokenkeep.vocabulary.Status`).
ConnectionStatus = Status


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
    auth_mode: AuthMode
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
    # The client address of the last ``GET /connections/{id}/token`` (direct mode): with
    # ``issued_to_address``, the evidence for a session locked to the IP it was made from.
    last_used_from_address: str | None = None


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


@dataclass(frozen=True, slots=True)
class RowState:
    """The few columns of a connection that tell whether a cached token is still current."""

    version: int
    status: str
    lease_owner: str | None
    lease_until: datetime | None


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """The outcome of one attempt to take a connection's refresh lease.

    ``took_over_expired`` is true when another owner held the lease and it had expired: that
    worker may have consumed (rotated) the refresh token and died before committing it, which
    is what makes a following ``invalid_grant`` a ``rotation_lost``.
    """

    acquired: bool
    holder: str | None
    until: datetime | None
    took_over_expired: bool = False


@dataclass(frozen=True, slots=True)
class ConnectSession:
    """A hosted-connect link's stored state (the link token itself is never stored)."""

    token_hash: str
    integration_key: str
    connection_id: str | None
    metadata: dict[str, Any]
    return_url: str | None
    expires_at: datetime
    used_at: datetime | None
    code_verifier: Secret | None = None


@dataclass(frozen=True, slots=True)
class BucketCounts:
    """Calls of one org and integration in one time bucket (``org_call_counts``)."""

    org_id: str
    integration_key: str
    bucket_start: datetime
    calls: int
    session_errors: int
    causes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OrgState:
    """An org's shared health row (``org_state``); every field may be unset."""

    org_id: str
    pause_started_at: datetime | None = None
    #: While paused: no write before this (the next probe's time).
    writes_paused_until: datetime | None = None
    pause_probe_owner: str | None = None
    pause_probe_until: datetime | None = None
    last_limit_info: str | None = None
    last_limit_info_at: datetime | None = None
    session_timeout_estimate_seconds: int | None = None
    session_timeout_learned_at: datetime | None = None
    session_timeout_samples: int = 0
    spike_started_at: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.pause_started_at is not None


@dataclass(frozen=True, slots=True)
class OrgConnections:
    """How many connections of one org are in each status."""

    org_id: str
    by_status: dict[str, int]
