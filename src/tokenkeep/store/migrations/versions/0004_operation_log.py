"""The operation log for every call: indexes for retention pruning and cause queries.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 12:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_operations_at", "operations", ["at"])
    op.create_index("ix_operations_cause_at", "operations", ["cause", "at"])


def downgrade() -> None:
    op.drop_index("ix_operations_cause_at", table_name="operations")
    op.drop_index("ix_operations_at", table_name="operations")
