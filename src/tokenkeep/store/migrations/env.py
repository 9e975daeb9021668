"""Alembic environment: runs on the connection :class:`tokenkeep.store.Database` passes in.

``Database.upgrade()`` puts a live (sync-facing) connection into
``config.attributes["connection"]``; there is no ``alembic.ini`` and no URL here. For
development, ``alembic -x url=sqlite:///dev.db revision --autogenerate`` also works.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from tokenkeep.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copes
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///tokenkeep-dev.db")
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
