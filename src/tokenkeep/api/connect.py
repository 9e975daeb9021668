"""The hosted connect flow over HTTP (logic: :mod:`tokenkeep.lifecycle.connect`).

* ``POST /connect/sessions`` (API key) → ``{url, expires_at}``: a single-use link to send to
  the customer's admin.
* ``GET /connect/{token}`` (public) → 302 to the provider's authorize URL (state + PKCE S256);
  for a JWT-bearer or client-credentials integration the connection is minted at once.
* ``GET /oauth/callback`` (public) → stores the connection, then 302 to ``return_url`` (with
  ``connection_id`` and ``status=connected``) or a plain success page.

The public pages answer failures with a short HTML page that says what happened and what to
do, never with a stack trace or a token; each failure is logged with its reason word. Pages
are ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer`` (the callback URL
carries the authorization code).
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from tokenkeep.api.deps import GatewayDep, require_api_key
from tokenkeep.api.inputs import Metadata, Text
from tokenkeep.api.responses import error_responses
from tokenkeep.api.return_urls import RETURN_URL_PATTERN, return_url_problem
from tokenkeep.api.schemas import CONNECTION_ID_PATTERN
from tokenkeep.config import Settings
from tokenkeep.errors import ValidationError
from tokenkeep.lifecycle.connect import ConnectFlow, ConnectFlowError, ConnectResult
from tokenkeep.observability.logging import get_logger
from tokenkeep.runtime import Gateway

__all__ = ["connect_flow", "router"]

router = APIRouter(tags=["connect"])
_log = get_logger("tokenkeep.connect")
_PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class _ConnectToken(Convertor[str]):
    """A connect link's token (``secrets.token_urlsafe(32)``: 43 URL-safe characters)."""

    regex = r"[A-Za-z0-9_-]{16,100}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("connect_token", _ConnectToken())


class ConnectSessionIn(BaseModel):
    """Body of ``POST /connect/sessions``."""

    model_config = ConfigDict(extra="forbid")

    integration: Text = Field(min_length=1, max_length=100)
    connection_id: str | None = Field(
        default=None,
        pattern=CONNECTION_ID_PATTERN,
        description="connect into this id (re-authorize an existing connection)",
    )
    metadata: Metadata | None = None
    return_url: str | None = Field(
        default=None,
        max_length=1000,
        pattern=RETURN_URL_PATTERN,
        description=(
            "where the browser goes when done: an absolute http(s) URL on an entry of "
            "TOKENKEEP_CONNECT_RETURN_URLS (default: the gateway's own origin), else 422"
        ),
    )


class ConnectSessionOut(BaseModel):
    """A connect link: single use, valid until ``expires_at``."""

    url: str
    expires_at: datetime


def connect_flow(gateway: Gateway) -> ConnectFlow:
    """The connect flow of ``gateway`` (also the dashboard's "reconnect link")."""
    return ConnectFlow(
        gateway.store,
        gateway.oauth,
        settings=gateway.settings,
        clock=gateway.clock,
        coordinator=gateway.coordinator,
    )


def _page(title: str, message: str, status_code: int) -> HTMLResponse:
    body = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;"
        "padding:0 1em;color:#222}h1{font-size:1.4em}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return HTMLResponse(body, status_code=status_code, headers=_PAGE_HEADERS)


def _failure_page(exc: ConnectFlowError) -> HTMLResponse:
    _log.warning("connect flow failed", reason=exc.reason, message=exc.message)
    return _page("Connection failed", exc.message, exc.http_status)


@router.post(
    "/connect/sessions",
    status_code=201,
    response_model=ConnectSessionOut,
    dependencies=[Depends(require_api_key)],
    responses=error_responses(400, 401, 404, 413, 422, 503),
)
async def create_connect_session(body: ConnectSessionIn, gateway: GatewayDep) -> ConnectSessionOut:
    """A single-use, short-lived connect link for an oauth2 integration.

    404 for an unknown integration; 422 for a ``return_url`` that is not allowed (the
    message names ``TOKENKEEP_CONNECT_RETURN_URLS``).
    """
    if body.return_url is not None:
        problem = return_url_problem(body.return_url, gateway.settings)
        if problem is not None:
            raise ValidationError(f"{problem}.")
    url, expires_at = await connect_flow(gateway).create_session(
        body.integration,
        connection_id=body.connection_id,
        metadata=body.metadata,
        return_url=body.return_url,
    )
    return ConnectSessionOut(url=url, expires_at=expires_at)


# "{token:connect_token}": only a token-shaped segment matches, so GET /connect/sessions
# is a 405 (the route exists, for POST) rather than a connect link that does not exist.
@router.get("/connect/{token:connect_token}", include_in_schema=False)
async def open_connect_link(token: Annotated[str, Path()], gateway: GatewayDep) -> Response:
    """Send the browser to the provider's consent page (state + PKCE)."""
    try:
        opened = await connect_flow(gateway).begin(token)
    except ConnectFlowError as exc:
        return _failure_page(exc)
    if isinstance(opened, str):
        return RedirectResponse(opened, status_code=302, headers=_PAGE_HEADERS)
    return _connected(opened, gateway.settings)  # JWT bearer / client credentials: no consent


@router.get("/oauth/callback", include_in_schema=False)
async def oauth_callback(
    gateway: GatewayDep,
    state: Annotated[str | None, Query(max_length=200)] = None,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
    error_description: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    """Finish the connect: exchange the code, store the connection, go back to the app."""
    try:
        result = await connect_flow(gateway).complete(
            state=state, code=code, error=error, error_description=error_description
        )
    except ConnectFlowError as exc:
        return _failure_page(exc)
    return _connected(result, gateway.settings)


def _connected(result: ConnectResult, settings: Settings) -> Response:
    if result.return_url:
        # Checked again here: a session stored before the allow-list changed (or written by
        # hand) must not turn the gateway into an open redirect.
        problem = return_url_problem(result.return_url, settings)
        if problem is None:
            return RedirectResponse(result.return_url, status_code=302, headers=_PAGE_HEADERS)
        _log.warning("connect return_url refused", reason="return_url_not_allowed")
    who = f" as {result.username}" if result.username else ""
    return _page(
        "Connected",
        f"The org {result.org_id} is connected{who}. You can close this window.",
        200,
    )
