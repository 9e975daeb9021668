"""The error answers each route documents in the OpenAPI document, in one place.

Every error is ``{"error": {"code", "message"}}`` (:mod:`tokenkeep.api.errors`); a route
lists the statuses it can answer with :func:`error_responses` instead of repeating dicts.
The statuses every authenticated route shares (401, 503) are added where the routers are
included (:mod:`tokenkeep.api.app`); those of a body (400, 413, 422) with
:data:`BODY_ERRORS`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

__all__ = ["AUTHENTICATED", "BODY_ERRORS", "ErrorBody", "ErrorDetail", "error_responses"]


class ErrorDetail(BaseModel):
    """What went wrong: a stable ``code`` word and a sentence for people."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """The one error shape of the control API."""

    error: ErrorDetail


_WHEN = {
    400: "The body is not JSON (`invalid_json`), or a malformed request (`bad_request`).",
    401: "Missing, wrong or revoked API key (`unauthorized`).",
    404: "No such resource (`not_found`).",
    409: "A conflict with what is stored (`conflict`, `needs_reauth`).",
    413: "The body is larger than TOKENKEEP_MAX_BODY_BYTES (`payload_too_large`).",
    422: "A field or parameter is missing, unknown or invalid (`validation_error`).",
    424: "An org admin must change a setting (`action_required`).",
    502: "The provider could not be reached (`upstream_unreachable`).",
    503: "The database or the provider is unavailable; retry later.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that can answer each of ``statuses`` with an error."""
    return {status: {"model": ErrorBody, "description": _WHEN[status]} for status in statuses}


#: Every route behind the API key (the key check reads the store: 503 when it is away).
AUTHENTICATED = error_responses(401, 503)
#: Every route that reads a JSON body.
BODY_ERRORS = error_responses(400, 413, 422)
