"""One error renderer: every control-API failure is ``{"error": {"code", "message"}}``.

FastAPI and Starlette each have their own error bodies (``{"detail": ...}``); the handlers
installed here replace all of them, so a client only ever parses one shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tokenkeep.api.inputs import PATTERN_SENTENCES
from tokenkeep.errors import TokenkeepError
from tokenkeep.observability.logging import get_logger

__all__ = [
    "error_body",
    "error_response",
    "install_error_handlers",
    "tokenkeep_error_response",
]

_log = get_logger("tokenkeep.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error shape of the control API."""
    return {"error": {"code": code, "message": message}}


def error_response(
    status_code: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON response carrying :func:`error_body`."""
    return JSONResponse(error_body(code, message), status_code=status_code, headers=headers)


def _field_name(loc: Sequence[Any]) -> str:
    # ("body", "credentials", "instance_url") -> "credentials.instance_url"; the leading
    # "body"/"query"/"path" only says where the field was, which the message adds back.
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        where, rest = parts[0], parts[1:]
        if not rest:
            return "request body" if where == "body" else where
        name = ".".join(rest)
        return name if where == "body" else f"{where} parameter {name}"
    return ".".join(parts) or "request"


def _validation_message(errors: Sequence[Any]) -> str:
    sentences = []
    for err in errors[:5]:
        field = _field_name(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            sentences.append(f"{field}: unknown field")
        elif err.get("type") == "missing":
            sentences.append(f"{field}: field required")
        elif err.get("type") == "string_pattern_mismatch" and (
            sentence := PATTERN_SENTENCES.get(str((err.get("ctx") or {}).get("pattern")))
        ):
            sentences.append(f"{field}: {sentence}")
        else:
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            sentences.append(f"{field}: {msg}")
    more = len(errors) - 5
    if more > 0:
        sentences.append(f"and {more} more")
    return "; ".join(sentences)


async def _tokenkeep_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, TokenkeepError):  # registered for this type only
        raise exc
    return tokenkeep_error_response(exc)


def tokenkeep_error_response(exc: TokenkeepError) -> JSONResponse:
    """The answer to one of our errors (its status, the error shape; ``WWW-Authenticate``
    on a 401), as every control route gives it."""
    if exc.status_code >= 500:
        # The request line is logged by RequestLog; this says why it failed.
        _log.warning("request failed", error_code=exc.code, reason=exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):  # registered for this type only
        raise exc
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        # Not a field problem: the body is not JSON at all. Never echo the body back.
        return error_response(400, "invalid_json", "The request body is not valid JSON.")
    return error_response(422, "validation_error", _validation_message(errors))


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str | None:
    """Every method some route of this path accepts (Starlette names only the first route's).

    Asked of the routes themselves, one method at a time (``matches`` is public API; the
    included routers' internals are not), so the answer holds for nested routers too.
    """
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed) if allowed else None


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):  # registered for this type only
        raise exc
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 404:
        message = "No such route."
    elif exc.status_code == 405:
        message = "This route does not accept that method."
        allow = _allowed_methods(request)
        if allow:
            headers["Allow"] = allow
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, code, message, headers or None)


async def _invalid_input(_request: Request, exc: Exception) -> JSONResponse:
    """A value the database or a conversion refused: the client's input, not our bug.

    The request schemas refuse these first (control characters, out-of-range numbers and
    dates); this is the safety net for a rule they miss, so that it is a 422 and not a 500.
    The transaction was rolled back: nothing was stored.
    """
    orig = getattr(exc, "orig", None) or exc
    _log.warning("input refused by the database", error=type(orig).__name__)
    return error_response(
        422,
        "validation_error",
        "A value in the request cannot be stored: it holds a control character or is out of range.",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the framework or our code raises in the one shape.

    Unexpected exceptions are not handled here: :class:`~tokenkeep.api.middleware.RequestLog`
    catches them outside the router, logs them and answers 500 ``internal_error``.
    """
    app.add_exception_handler(TokenkeepError, _tokenkeep_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    # PostgreSQL's "invalid input" family (psycopg.DataError, wrapped by SQLAlchemy), and
    # a number or date too large for Python's datetime.
    for invalid in (sa_exc.DataError, psycopg.DataError, OverflowError):
        app.add_exception_handler(invalid, _invalid_input)
