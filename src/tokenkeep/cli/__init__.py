"""The ``tokenkeep`` command (typer + rich).

``serve`` and ``demo`` run the gateway; the admin commands (``db``, ``keys``,
``integrations``, ``connections``, ``orgs``, ``logs``) open the store directly with the
same ``TOKENKEEP_*`` settings, so they work whether or not a server is running. One module
per command group.

Every failure we expect (a bad setting, a wrong encryption key, an unreachable database, a
bad argument) ends as one red sentence on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

from tokenkeep.cli._shared import app
from tokenkeep.cli.connections import connections_app
from tokenkeep.cli.db import db_app
from tokenkeep.cli.emulator import demo, emulator
from tokenkeep.cli.integrations import integrations_app
from tokenkeep.cli.keys import keys_app
from tokenkeep.cli.logs import logs
from tokenkeep.cli.orgs import orgs_app
from tokenkeep.cli.serve import scheduler, serve

__all__ = ["app", "main"]

# Registered here, in one place: this order is the order of ``tokenkeep --help``.
app.command()(serve)
app.command()(scheduler)
app.command()(demo)
app.command()(emulator)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(integrations_app, name="integrations")
app.add_typer(connections_app, name="connections")
app.add_typer(orgs_app, name="orgs")
app.command()(logs)


def main() -> None:
    """Console-script entry point."""
    app()
