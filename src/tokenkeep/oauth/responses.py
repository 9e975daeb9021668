"""Recognise the Salesforce API answers that matter to the gateway. Pure and fast.

:func:`classify_api_response` is the library's reader of an API answer, meant for
diagnosis (picking probes). The proxy does NOT call it: its hot path has its own narrower
reader, ``tokenkeep.proxy.retry.inspect_response`` (status plus the first bytes of the
body, no header mapping), which recognises the same answers for the retry-once decision. Bodies are
parsed defensively: REST errors are a JSON array in any key order, but a few answers are
plain text (``403 Bad_OAuth_Token``) or HTML from a load balancer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from tokenkeep.providers.salesforce import RestError, parse_rest_errors

__all__ = ["ApiFailure", "ApiFailureKind", "classify_api_response"]

ApiFailureKind = Literal[
    "invalid_session",
    "session_not_valid_for_rest",
    "bad_oauth_token",
    "url_not_reset",
    "request_limit_exceeded",
    "api_disabled",
    "maintenance",
    "server_unavailable",
]

Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ApiFailure:
    """A recognised failure of a Salesforce data call.

    ``refresh_may_help``: refreshing the token and retrying once can fix it.
    ``transient``: the org/provider is temporarily unable; retry later, not now.
    ``likely_cause``: the diagnosis cause word this points at first (``expired``,
    ``api_client_control``, ``wrong_instance``, ``maintenance``) or None.
    """

    kind: ApiFailureKind
    status: int
    error_code: str | None
    message: str | None
    refresh_may_help: bool
    transient: bool = False
    likely_cause: str | None = None
    retry_after: float | None = None


# Larger bodies are not error arrays worth parsing on the hot path; they are searched only.
_MAX_PARSE = 65_536
_MAINTENANCE = "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
_NOT_FOR_REST = "not valid for use with the rest api"


def _header(headers: Headers, name: str) -> str | None:
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if key.lower() == name:
                return value
        return None
    for key, value in headers:
        k = key.decode("latin-1") if isinstance(key, bytes) else key
        if k.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _retry_after(headers: Headers) -> float | None:
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _errors(body: bytes) -> list[RestError]:
    head = body[:64].lstrip()
    if not head or head[:1] not in (b"[", b"{") or len(body) > _MAX_PARSE:
        return []
    return parse_rest_errors(body)


def classify_api_response(status: int, headers: Headers, body: bytes) -> ApiFailure | None:
    """The recognised failure in a data-call answer, or None (success, or an ordinary
    client error such as ``MALFORMED_QUERY`` or ``NOT_FOUND`` that the caller must see)."""
    if status < 400:
        return None
    errors = _errors(body)
    first = errors[0] if errors else None
    code = first.error_code if first else None
    message = first.message if first else None

    if any(e.error_code == _MAINTENANCE for e in errors) or (
        not errors and _MAINTENANCE.encode() in body[:4096]
    ):
        # Read-only mode: writes fail until maintenance ends. Status is UNCERTAIN (any).
        return ApiFailure(
            "maintenance",
            status,
            _MAINTENANCE,
            message,
            refresh_may_help=False,
            transient=True,
            likely_cause="maintenance",
            retry_after=_retry_after(headers),
        )
    if status == 401 or code == "INVALID_SESSION_ID":
        if code == "INVALID_SESSION_ID" and message and _NOT_FOR_REST in message.lower():
            # API Access Control / "API Client Control": a new token will not fix it.
            return ApiFailure(
                "session_not_valid_for_rest",
                status,
                code,
                message,
                refresh_may_help=False,
                likely_cause="api_client_control",
            )
        # "Session expired or invalid" -- or any 401: expiry is the first hypothesis (an
        # IP lock or a revocation looks the same; diagnosis tells them apart).
        return ApiFailure(
            "invalid_session",
            status,
            code,
            message,
            refresh_may_help=True,
            likely_cause="expired",
        )
    if status == 403 and not errors and body[:64].strip().startswith(b"Bad_OAuth_Token"):
        # Plain text from /services/oauth2/* and the identity URL; the Mobile SDK refreshes.
        return ApiFailure(
            "bad_oauth_token",
            status,
            "Bad_OAuth_Token",
            None,
            refresh_may_help=True,
            likely_cause="expired",
        )
    if code == "URL_NOT_RESET":
        return ApiFailure(
            "url_not_reset",
            status,
            code,
            message,
            refresh_may_help=False,
            likely_cause="wrong_instance",
        )
    if code == "REQUEST_LIMIT_EXCEEDED":
        return ApiFailure(
            "request_limit_exceeded",
            status,
            code,
            message,
            refresh_may_help=False,
            transient=True,
            retry_after=_retry_after(headers),
        )
    if code == "API_DISABLED_FOR_ORG":
        return ApiFailure("api_disabled", status, code, message, refresh_may_help=False)
    if status in (502, 503, 504) or code == "SERVER_UNAVAILABLE":
        return ApiFailure(
            "server_unavailable",
            status,
            code,
            message,
            refresh_may_help=False,
            transient=True,
            retry_after=_retry_after(headers),
        )
    return None
