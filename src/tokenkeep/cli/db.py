"""``tokenkeep db``: the database schema."""

from __future__ import annotations

import typer

from tokenkeep.cli._shared import console, run, settings_or_fail
from tokenkeep.clock import SystemClock
from tokenkeep.observability.logging import configure_logging

__all__ = ["db_app"]

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (start-up also does this)."""
    from tokenkeep.store.database import Database

    settings = settings_or_fail()
    configure_logging(settings.log_format, "WARNING")

    async def go() -> str | None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(
            settings.db_url, clock=SystemClock(), connect_timeout=settings.db_connect_timeout
        )
        try:
            await db.upgrade()
            return await db.current_revision()
        finally:
            await db.close()

    revision = run(go())
    console.print(f"database is at revision [bold]{revision}[/] (head)")
