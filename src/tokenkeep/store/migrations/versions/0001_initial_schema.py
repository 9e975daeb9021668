"""Initial schema: every table of tokenkeep 0.1

Revision ID: 0001
Revises:
Create Date: 2026-11-25 15:35:03.995941
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "integrations",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("provider", sa.String(length=50), nullable=False),
        sa.Column("client_id", sa.String(length=500), nullable=False),
        sa.Column("client_secret_enc", sa.Text(), nullable=True),
        sa.Column("login_url", sa.String(length=500), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("auth_mode", sa.String(length=30), nullable=False),
        sa.Column("private_key_enc", sa.Text(), nullable=True),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column("session_timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_integrations")),
    )
    op.create_table(
        "keyring_check",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("canary_enc", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_keyring_check")),
    )
    op.create_table(
        "operations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("connection_id", sa.String(length=100), nullable=True),
        sa.Column("org_id", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=30), nullable=False),
        sa.Column("cause", sa.String(length=50), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Double(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operations")),
    )
    op.create_index(
        "ix_operations_connection_id_at", "operations", ["connection_id", "at"], unique=False
    )
    op.create_index("ix_operations_kind_at", "operations", ["kind", "at"], unique=False)
    op.create_index("ix_operations_org_id_at", "operations", ["org_id", "at"], unique=False)

    op.create_table(
        "org_state",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("writes_paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pause_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_limit_info", sa.String(length=200), nullable=True),
        sa.Column("session_timeout_estimate_seconds", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("org_id", name=op.f("pk_org_state")),
    )
    op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("connection_id", sa.String(length=100), nullable=True),
        sa.Column("org_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index(
        "ix_outbox_delivered_at_available_at",
        "outbox",
        ["delivered_at", "available_at"],
        unique=False,
    )

    op.create_table(
        "connect_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("integration_key", sa.String(length=100), nullable=False),
        sa.Column("connection_id", sa.String(length=100), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("return_url", sa.String(length=1000), nullable=True),
        sa.Column("state_hash", sa.String(length=64), nullable=True),
        sa.Column("code_verifier_enc", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_key"],
            ["integrations.key"],
            name=op.f("fk_connect_sessions_integration_key_integrations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_connect_sessions")),
    )
    op.create_index(
        op.f("ix_connect_sessions_state_hash"),
        "connect_sessions",
        ["state_hash"],
        unique=False,
    )

    op.create_table(
        "connections",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("integration_key", sa.String(length=100), nullable=False),
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column("instance_url", sa.String(length=500), nullable=False),
        sa.Column("id_url", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("status_reason", sa.String(length=50), nullable=True),
        sa.Column("access_token_enc", sa.Text(), nullable=False),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("refresh_token_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_refresh_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_attempts", sa.Integer(), nullable=False),
        sa.Column("last_refresh_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("issued_to_address", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_key"],
            ["integrations.key"],
            name=op.f("fk_connections_integration_key_integrations"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connections")),
    )
    op.create_index(
        "ix_connections_created_at_id", "connections", ["created_at", "id"], unique=False
    )
    op.create_index(
        "ix_connections_identity",
        "connections",
        ["integration_key", "org_id", "user_id"],
        unique=False,
    )
    op.create_index(
        "ix_connections_integration_key", "connections", ["integration_key"], unique=False
    )
    op.create_index("ix_connections_org_id", "connections", ["org_id"], unique=False)
    op.create_index(
        "ix_connections_status_next_refresh_at",
        "connections",
        ["status", "next_refresh_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_connections_status_next_refresh_at", table_name="connections")
    op.drop_index("ix_connections_org_id", table_name="connections")
    op.drop_index("ix_connections_integration_key", table_name="connections")
    op.drop_index("ix_connections_identity", table_name="connections")
    op.drop_index("ix_connections_created_at_id", table_name="connections")

    op.drop_table("connections")
    op.drop_index(op.f("ix_connect_sessions_state_hash"), table_name="connect_sessions")

    op.drop_table("connect_sessions")
    op.drop_index("ix_outbox_delivered_at_available_at", table_name="outbox")

    op.drop_table("outbox")
    op.drop_table("org_state")
    op.drop_index("ix_operations_org_id_at", table_name="operations")
    op.drop_index("ix_operations_kind_at", table_name="operations")
    op.drop_index("ix_operations_connection_id_at", table_name="operations")

    op.drop_table("operations")
    op.drop_table("keyring_check")
    op.drop_table("integrations")
    op.drop_table("api_keys")
