"""Org health and diagnosis: call counts per org, the shared write-pause probe, learned
timeout samples, the last diagnosis and the direct-mode client address of a connection.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "org_call_counts",
        sa.Column("org_id", sa.String(length=64), nullable=False),
        sa.Column("integration_key", sa.String(length=100), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("session_errors", sa.Integer(), nullable=False),
        sa.Column("causes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint(
            "org_id", "integration_key", "bucket_start", name=op.f("pk_org_call_counts")
        ),
    )
    op.create_index(
        "ix_org_call_counts_bucket_start", "org_call_counts", ["bucket_start"], unique=False
    )
    with op.batch_alter_table("org_state") as batch:
        batch.add_column(
            sa.Column("session_timeout_learned_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(
            sa.Column("session_timeout_samples", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("pause_probe_owner", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("pause_probe_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_limit_info_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("spike_started_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("last_used_from_address", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("diagnosis", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("diagnosis")
        batch.drop_column("last_used_from_address")
    with op.batch_alter_table("org_state") as batch:
        batch.drop_column("spike_started_at")
        batch.drop_column("last_limit_info_at")
        batch.drop_column("pause_probe_until")
        batch.drop_column("pause_probe_owner")
        batch.drop_column("session_timeout_samples")
        batch.drop_column("session_timeout_learned_at")
    op.drop_index("ix_org_call_counts_bucket_start", table_name="org_call_counts")
    op.drop_table("org_call_counts")
