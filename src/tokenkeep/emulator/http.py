"""Small HTTP helpers shared by the emulator's handlers (response shapes of SALESFORCE.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

__all__ = [
    "NO_STORE",
    "Call",
    "ConnectionDrop",
    "bad_oauth_token",
    "bearer_token",
    "json_response",
    "oauth_error",
    "read_form",
    "sf_error",
]

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class ConnectionDrop(Exception):
    """Raised by a handler to make the server abort the TCP connection (a fault)."""


@dataclass(slots=True)
class Call:
    """What the request log learns about one request while it is handled."""

    grant_type: str | None = None
    org_id: str | None = None
    error_code: str | None = None


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON without Starlette's re-encoding overhead (compact, UTF-8)."""
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json;charset=UTF-8",
        headers=headers,
    )


def oauth_error(error: str, description: str, status: int = 400) -> Response:
    """The token endpoint's error shape: ``{"error", "error_description"}``, never cached."""
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=NO_STORE
    )


def sf_error(status: int, error_code: str, message: str) -> Response:
    """A data-API error: a JSON ARRAY of ``{"message", "errorCode"}``."""
    return json_response([{"message": message, "errorCode": error_code}], status)


def bad_oauth_token() -> Response:
    """What identity/userinfo/oauth2 endpoints answer for an invalid token (plain text)."""
    return PlainTextResponse("Bad_OAuth_Token", status_code=403)


async def read_form(request: Request) -> dict[str, str]:
    """A form-encoded body (and the query string, body wins) as a flat dict."""
    values = dict(parse_qsl(request.url.query, keep_blank_values=True))
    body = await request.body()
    if body:
        values.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return values


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer|OAuth <token>``, or ``X-SFDC-Session``."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() in ("bearer", "oauth") and token.strip():
            return token.strip()
        return None
    session = request.headers.get("x-sfdc-session")
    return session.strip() if session else None


def error_code_of(response: Response) -> str | None:
    """The ``errorCode``/``error`` of an error response body, for the request log."""
    if response.status_code < 400:
        return None
    body = getattr(response, "body", None)
    if not body or body[:1] not in (b"[", b"{"):
        if body == b"Bad_OAuth_Token":
            return "Bad_OAuth_Token"
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        code = data[0].get("errorCode")
        return str(code) if code else None
    if isinstance(data, dict):
        code = data.get("error")
        return code if isinstance(code, str) else None
    return None
