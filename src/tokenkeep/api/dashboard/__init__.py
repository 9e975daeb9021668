"""The dashboard: server-rendered pages under ``/dashboard`` (Jinja2 + a vendored htmx).

``/dashboard/login`` and ``/dashboard/static/*`` are public; every other page needs the
session cookie (:mod:`tokenkeep.api.dashboard.session`) and sends the browser to the login
page without it. Pages: overview, connections (and one connection, with its actions), orgs,
logs, webhooks. Each reads through the same read models and use cases as the JSON routes.
"""

from __future__ import annotations

from fastapi import FastAPI

from tokenkeep.api.dashboard.actions import router as actions_router
from tokenkeep.api.dashboard.connections import router as connections_router
from tokenkeep.api.dashboard.login import router as login_router
from tokenkeep.api.dashboard.logs import router as logs_router
from tokenkeep.api.dashboard.orgs import router as orgs_router
from tokenkeep.api.dashboard.overview import router as overview_router
from tokenkeep.api.dashboard.session import PREFIX, install_session_handlers
from tokenkeep.api.dashboard.static_files import router as static_router
from tokenkeep.api.dashboard.webhooks import router as webhooks_router

__all__ = ["install_dashboard"]


def install_dashboard(app: FastAPI) -> None:
    """Mount the dashboard's routes under ``/dashboard`` and its login/CSRF handlers."""
    for part in (
        static_router,
        login_router,
        overview_router,
        connections_router,
        actions_router,
        orgs_router,
        logs_router,
        webhooks_router,
    ):
        app.include_router(part, prefix=PREFIX)
    install_session_handlers(app)
