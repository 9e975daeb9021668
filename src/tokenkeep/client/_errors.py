"""The gateway's ``{"error": {"code", "message"}}`` bodies as typed exceptions.

Mapped once, here: a code that names one of :mod:`tokenkeep.errors` raises that class
(``except NeedsReauthError`` works the same in the gateway and in the SDK); any other
code raises :class:`TokenkeepAPIError` with the gateway's ``code`` and HTTP status. A
gateway that cannot be reached at all raises :class:`GatewayUnreachableError`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tokenkeep.errors import (
    ActionRequiredError,
    ConflictError,
    DatabaseUnavailableError,
    NeedsReauthError,
    NotFoundError,
    OrgWritePausedError,
    PayloadTooLargeError,
    TokenkeepError,
    TransientUpstreamError,
    UnauthorizedError,
    ValidationError,
)

__all__ = ["GatewayUnreachableError", "TokenkeepAPIError", "error_from_response"]

_KNOWN: dict[str, type[TokenkeepError]] = {
    cls.code: cls
    for cls in (
        ActionRequiredError,
        ConflictError,
        DatabaseUnavailableError,
        NeedsReauthError,
        NotFoundError,
        OrgWritePausedError,
        PayloadTooLargeError,
        TransientUpstreamError,
        UnauthorizedError,
        ValidationError,
    )
}


class TokenkeepAPIError(TokenkeepError):
    """The gateway answered with an error whose code has no dedicated class.

    ``code`` is the gateway's code word and ``status_code`` the HTTP status of that answer
    (both per instance here, unlike the classes of :mod:`tokenkeep.errors`).
    """

    code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        # The code and status vary per answer; the base class declares them as class-level
        # constants for its own subclasses, so they are set on the instance explicitly.
        if code is not None:
            setattr(self, "code", code)  # noqa: B010
        if status_code is not None:
            setattr(self, "status_code", status_code)  # noqa: B010


class GatewayUnreachableError(TokenkeepAPIError):
    """No HTTP answer from the gateway (refused, reset, timed out, DNS)."""

    code = "gateway_unreachable"
    status_code = 503


def _error_fields(response: httpx.Response) -> tuple[str | None, str, dict[str, Any]]:
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        details = error.get("details")
        return (
            code if isinstance(code, str) else None,
            message if isinstance(message, str) else f"HTTP {response.status_code}",
            details if isinstance(details, dict) else {},
        )
    # Not our error shape (a proxy in front of the gateway, an HTML error page): keep a
    # short excerpt so the message still says something.
    excerpt = response.text[:200].strip()
    return None, f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else ""), {}


def error_from_response(response: httpx.Response) -> TokenkeepError:
    """The exception for a gateway answer with status >= 400."""
    code, message, details = _error_fields(response)
    request_id = response.headers.get("tokenkeep-request-id")
    if request_id:
        details = {**details, "request_id": request_id}
    known = _KNOWN.get(code or "")
    if known is not None:
        return known(message, details=details)
    return TokenkeepAPIError(
        message,
        code=code or f"http_{response.status_code}",
        status_code=response.status_code,
        details=details,
    )
