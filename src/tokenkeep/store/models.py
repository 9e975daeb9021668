"""SQLAlchemy 2 typed models: the tables tokenkeep keeps.

Columns named ``*_enc`` hold :mod:`tokenkeep.crypto` ciphertexts, bound to the row id and
the field name (``<table>.<column without _enc>``). Timestamps are aware UTC datetimes on
both engines (:class:`UTCDateTime`). The Alembic migrations in ``migrations/versions`` must
produce exactly these tables (``tests/store/test_migrations.py`` checks it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKeyRow",
    "Base",
    "ConnectSessionRow",
    "ConnectionRow",
    "DashboardSessionRow",
    "IntegrationRow",
    "KeyringCheckRow",
    "OperationRow",
    "OrgCallCountRow",
    "OrgStateRow",
    "OutboxRow",
    "UTCDateTime",
    "WebhookDeliveryRow",
    "WebhookEndpointRow",
]

# Deterministic constraint names: the same on SQLite and PostgreSQL, so migrations can
# refer to them and the schema comparison is exact.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every engine.

    PostgreSQL stores ``timestamptz``. SQLite has no time zone type, so values are stored
    as naive UTC text (fixed width, so ``<``/``>`` in SQL compare correctly) and come back
    aware. A naive datetime is refused at bind time: it would be ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base; every table shares :data:`NAMING_CONVENTION`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class IntegrationRow(Base):
    """An OAuth app configuration (a Salesforce connected app)."""

    __tablename__ = "integrations"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    provider: Mapped[str] = mapped_column(String(50))
    client_id: Mapped[str] = mapped_column(String(500))
    client_secret_enc: Mapped[str | None] = mapped_column(Text)
    login_url: Mapped[str] = mapped_column(String(500))
    scopes: Mapped[list[str]]
    auth_mode: Mapped[str] = mapped_column(String(30))
    private_key_enc: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str | None] = mapped_column(String(255))
    session_timeout_seconds: Mapped[int] = mapped_column(Integer, default=7200)
    key_id: Mapped[str] = mapped_column(String(32))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ConnectionRow(Base):
    """One user's grant in one org: encrypted tokens plus lifecycle state."""

    __tablename__ = "connections"
    __table_args__ = (
        Index("ix_connections_status_next_refresh_at", "status", "next_refresh_at"),
        # The scheduler's claim: due rows in next_refresh_at order, read until LIMIT (no
        # sort of the whole backlog). Partial: only rows the scheduler can refresh.
        Index(
            "ix_connections_due",
            "next_refresh_at",
            postgresql_where=text("status IN ('active', 'error')"),
            sqlite_where=text("status IN ('active', 'error')"),
        ),
        Index("ix_connections_org_id", "org_id"),
        Index("ix_connections_integration_key", "integration_key"),
        Index("ix_connections_identity", "integration_key", "org_id", "user_id"),
        Index("ix_connections_created_at_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    integration_key: Mapped[str] = mapped_column(
        String(100), ForeignKey("integrations.key", ondelete="RESTRICT")
    )
    org_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    username: Mapped[str | None] = mapped_column(String(255))
    instance_url: Mapped[str] = mapped_column(String(500))
    id_url: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))
    status_reason: Mapped[str | None] = mapped_column(String(50))
    access_token_enc: Mapped[str] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    # Fencing token for compare-and-swap: bumped on every credential write.
    version: Mapped[int] = mapped_column(Integer, default=1)
    refresh_token_fingerprint: Mapped[str | None] = mapped_column(String(64))
    issued_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    next_refresh_at: Mapped[datetime | None]
    refresh_attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_refresh_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    issued_to_address: Mapped[str | None] = mapped_column(String(64))
    # The address a direct-mode client last fetched the token from (GET .../token).
    last_used_from_address: Mapped[str | None] = mapped_column(String(64))
    # The last diagnosis (cause, confidence, evidence, fix, at): the dashboard's "why".
    diagnosis: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None]
    # Which encryption key wrote every *_enc column of this row (rotation picks the others).
    key_id: Mapped[str] = mapped_column(String(32))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class OperationRow(Base):
    """The operation log: every refresh, proxied call, connect and webhook delivery."""

    __tablename__ = "operations"
    __table_args__ = (
        Index("ix_operations_org_id_at", "org_id", "at"),
        Index("ix_operations_connection_id_at", "connection_id", "at"),
        Index("ix_operations_kind_at", "kind", "at"),
        # Retention pruning (oldest first) and the unfiltered, newest-first page.
        Index("ix_operations_at", "at"),
        Index("ix_operations_cause_at", "cause", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(30))
    connection_id: Mapped[str | None] = mapped_column(String(100))
    org_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(30))
    cause: Mapped[str | None] = mapped_column(String(50))
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float | None]
    detail: Mapped[dict[str, Any]]


class OutboxRow(Base):
    """A webhook event waiting for (or done with) delivery: at-least-once."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_delivered_at_available_at", "delivered_at", "available_at"),
        Index("ix_outbox_fanned_out_at_id", "fanned_out_at", "id"),
        # A connection's events, newest first (the dashboard's connection timeline).
        Index("ix_outbox_connection_id_id", "connection_id", "id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    connection_id: Mapped[str | None] = mapped_column(String(100))
    org_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    available_at: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    # When the webhook worker turned this event into one delivery per matching endpoint
    # (None: not yet; rows older than the webhooks feature were marked at the migration).
    fanned_out_at: Mapped[datetime | None]


class WebhookEndpointRow(Base):
    """A webhook receiver: its URL, event filter and encrypted signing secret."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Event types delivered to it; None: every type.
    events: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    description: Mapped[str | None] = mapped_column(String(500))
    # "api" (POST /webhooks) or "settings" (TOKENKEEP_WEBHOOK_URL, kept in sync at start).
    source: Mapped[str] = mapped_column(String(20))
    # The whsec_... secret, bound to (id, "webhook_endpoints.secret").
    secret_enc: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookDeliveryRow(Base):
    """One outbox event for one endpoint: attempts, the next try, the claim of a sender."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_state_next_at", "state", "next_at"),
        Index("ix_webhook_deliveries_event_id_endpoint_id", "event_id", "endpoint_id", unique=True),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("outbox.event_id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # pending | delivered | failed
    state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When the current round began (fan-out or redeliver): the max-age window starts here.
    queued_at: Mapped[datetime]
    next_at: Mapped[datetime]
    # Bumped by a redeliver, so a sender still holding the old round cannot close the new one.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    claim_owner: Mapped[str | None] = mapped_column(String(100))
    claim_until: Mapped[datetime | None]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    """A control-plane API key; only the SHA-256 of its secret part is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ConnectSessionRow(Base):
    """A hosted connect-flow session (authorization code + PKCE + state)."""

    __tablename__ = "connect_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    integration_key: Mapped[str] = mapped_column(
        String(100), ForeignKey("integrations.key", ondelete="CASCADE")
    )
    connection_id: Mapped[str | None] = mapped_column(String(100))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    return_url: Mapped[str | None] = mapped_column(String(1000))
    state_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    code_verifier_enc: Mapped[str | None] = mapped_column(Text)
    key_id: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class OrgStateRow(Base):
    """Per-org health shared by every gateway instance (write pause, session timeout)."""

    __tablename__ = "org_state"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    writes_paused_until: Mapped[datetime | None]
    pause_started_at: Mapped[datetime | None]
    last_limit_info: Mapped[str | None] = mapped_column(String(200))
    session_timeout_estimate_seconds: Mapped[int | None] = mapped_column(Integer)
    # When the estimate was last learned, from how many agreeing samples (it grows back).
    session_timeout_learned_at: Mapped[datetime | None]
    session_timeout_samples: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # One write-pause probe at a time across every gateway: who holds it, until when.
    pause_probe_owner: Mapped[str | None] = mapped_column(String(100))
    pause_probe_until: Mapped[datetime | None]
    last_limit_info_at: Mapped[datetime | None]
    # An open org.session_error_spike episode (None: none open).
    spike_started_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class OrgCallCountRow(Base):
    """Calls and session errors of one org and integration in one time bucket (org health).

    Gateways count in memory and add their counts here periodically, so every gateway's
    sliding window sees every other's calls.
    """

    __tablename__ = "org_call_counts"
    __table_args__ = (Index("ix_org_call_counts_bucket_start", "bucket_start"),)

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    integration_key: Mapped[str] = mapped_column(String(100), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(primary_key=True)
    calls: Mapped[int] = mapped_column(Integer, default=0)
    session_errors: Mapped[int] = mapped_column(Integer, default=0)
    # cause word -> count of calls that ended with that cause in this bucket
    causes: Mapped[dict[str, Any]]


class KeyringCheckRow(Base):
    """One canary per encryption key ever used: proves at start-up that the key is right."""

    __tablename__ = "keyring_check"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    canary_enc: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class DashboardSessionRow(Base):
    """A dashboard login: the cookie's token (only its SHA-256), the key it came from, the
    CSRF token of its forms, and one flash message for the next page."""

    __tablename__ = "dashboard_sessions"
    __table_args__ = (Index("ix_dashboard_sessions_expires_at", "expires_at"),)

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("api_keys.id", ondelete="CASCADE")
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    flash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
