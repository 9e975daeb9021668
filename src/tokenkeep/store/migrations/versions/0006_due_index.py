"""The scheduler's due index: ``next_refresh_at`` of the rows it can refresh (status
active or error), so a claim reads the most overdue rows in order and stops at its LIMIT
instead of sorting the whole due backlog (issue 14 §4).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_DUE = sa.text("status IN ('active', 'error')")


def upgrade() -> None:
    op.create_index(
        "ix_connections_due",
        "connections",
        ["next_refresh_at"],
        postgresql_where=_DUE,
        sqlite_where=_DUE,
    )


def downgrade() -> None:
    op.drop_index("ix_connections_due", table_name="connections")
