"""``create_app(gateway)``: the FastAPI control plane."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from tokenkeep.__about__ import __version__
from tokenkeep.api.connect import router as connect_router
from tokenkeep.api.connections import router as connections_router
from tokenkeep.api.dashboard import install_dashboard
from tokenkeep.api.deps import require_api_key
from tokenkeep.api.diagnosis import router as diagnosis_router
from tokenkeep.api.errors import install_error_handlers
from tokenkeep.api.health import router as health_router
from tokenkeep.api.integrations import router as integrations_router
from tokenkeep.api.logs import router as logs_router
from tokenkeep.api.metrics import router as metrics_router
from tokenkeep.api.middleware import BodySizeLimit, RequestLog
from tokenkeep.api.orgs import router as orgs_router
from tokenkeep.api.responses import AUTHENTICATED
from tokenkeep.api.tokens import router as tokens_router
from tokenkeep.api.webhooks import router as webhooks_router
from tokenkeep.runtime import Gateway

__all__ = ["create_app"]

_DESCRIPTION = """\
The tokenkeep control plane. Every route except `/healthz`, `/readyz`, `/metrics`, the connect pages
and the OAuth callback needs `Authorization: Bearer <api key>`. Every error is
`{"error": {"code": "...", "message": "..."}}`.
"""


def create_app(gateway: Gateway) -> FastAPI:
    """The control-plane ASGI app for ``gateway`` (which the caller starts and stops)."""
    app = FastAPI(
        title="tokenkeep",
        version=__version__,
        description=_DESCRIPTION,
        # The schema is served below behind the API key; the interactive docs pages would
        # fetch it without one, so they are off.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    install_error_handlers(app)

    authenticated = [Depends(require_api_key)]
    app.include_router(health_router)
    app.include_router(metrics_router)  # public, like /healthz: counts only
    app.include_router(integrations_router, dependencies=authenticated, responses=AUTHENTICATED)
    app.include_router(connections_router, dependencies=authenticated, responses=AUTHENTICATED)
    app.include_router(tokens_router, dependencies=authenticated, responses=AUTHENTICATED)
    app.include_router(diagnosis_router, dependencies=authenticated, responses=AUTHENTICATED)
    app.include_router(logs_router, dependencies=authenticated, responses=AUTHENTICATED)
    app.include_router(orgs_router, dependencies=authenticated, responses=AUTHENTICATED)
    app.include_router(webhooks_router, dependencies=authenticated, responses=AUTHENTICATED)
    app.include_router(connect_router)  # pages are public; /connect/sessions checks the key
    install_dashboard(app)  # its own login: a session cookie, not the API key header

    @app.get("/openapi.json", include_in_schema=False, dependencies=authenticated)
    async def openapi(request: Request) -> JSONResponse:
        schema: dict[str, Any] = request.app.openapi()
        return JSONResponse(schema)

    # Outermost last: RequestLog sees every request, including those BodySizeLimit refuses.
    app.add_middleware(BodySizeLimit, max_bytes=gateway.settings.max_body_bytes)
    app.add_middleware(RequestLog, clock=gateway.clock)
    return app
