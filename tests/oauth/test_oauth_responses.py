"""classify_api_response: the Salesforce data-call failures the proxy and diagnosis act on."""

from __future__ import annotations

import json

import pytest

from tokenkeep.oauth.responses import classify_api_response


def arr(code: str, message: str, *, reverse: bool = False) -> bytes:
    item = {"message": message, "errorCode": code}
    if reverse:
        item = {"errorCode": code, "message": message}
    return json.dumps([item]).encode()


EXPIRED = arr("INVALID_SESSION_ID", "Session expired or invalid")
NOT_REST = arr("INVALID_SESSION_ID", "This session is not valid for use with the REST API")
MAINT = arr(
    "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE",
    "Updates can't be made during maintenance. Try again when maintenance is complete.",
)

CASES = [
    # id, status, body, kind, refresh_may_help, transient, likely_cause
    ("expired-session", 401, EXPIRED, "invalid_session", True, False, "expired"),
    ("expired-session-reversed-keys", 401,
     arr("INVALID_SESSION_ID", "Session expired or invalid", reverse=True),
     "invalid_session", True, False, "expired"),
    ("not-valid-for-rest", 401, NOT_REST, "session_not_valid_for_rest", False, False,
     "api_client_control"),
    ("not-valid-for-rest-reversed", 401,
     arr("INVALID_SESSION_ID", "This session is not valid for use with the REST API",
         reverse=True),
     "session_not_valid_for_rest", False, False, "api_client_control"),
    ("401-html-body", 401, b"<html>nope</html>", "invalid_session", True, False, "expired"),
    ("401-empty-body", 401, b"", "invalid_session", True, False, "expired"),
    ("bad-oauth-token-plain-text", 403, b"Bad_OAuth_Token", "bad_oauth_token", True, False,
     "expired"),
    ("bad-oauth-token-trailing-newline", 403, b"Bad_OAuth_Token\n", "bad_oauth_token", True,
     False, "expired"),
    ("url-not-reset", 400,
     arr("URL_NOT_RESET", "Destination URL not reset. The URL returned from login must be set"),
     "url_not_reset", False, False, "wrong_instance"),
    ("request-limit", 403, arr("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
     "request_limit_exceeded", False, True, None),
    ("api-disabled", 403,
     arr("API_DISABLED_FOR_ORG", "The REST API is not enabled for this Organization."),
     "api_disabled", False, False, None),
    ("maintenance-400", 400, MAINT, "maintenance", False, True, "maintenance"),
    ("maintenance-503", 503, MAINT, "maintenance", False, True, "maintenance"),
    ("maintenance-second-entry", 400,
     json.dumps([{"errorCode": "FIELD_X", "message": "x"},
                 {"message": "m", "errorCode":
                  "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"}]).encode(),
     "maintenance", False, True, "maintenance"),
    ("server-unavailable", 503, arr("SERVER_UNAVAILABLE", "Server unavailable"),
     "server_unavailable", False, True, None),
    ("503-html", 503, b"<html>Service Unavailable</html>", "server_unavailable", False, True,
     None),
    ("502-gateway", 502, b"", "server_unavailable", False, True, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "kind", "refresh", "transient", "cause"),
    [pytest.param(*row[1:], id=row[0]) for row in CASES],
)
def test_recognised_failures(  # noqa: PLR0917 (one parameter per table column)
    status: int, body: bytes, kind: str, refresh: bool, transient: bool, cause: str | None
) -> None:
    failure = classify_api_response(status, {}, body)
    assert failure is not None
    assert failure.kind == kind
    assert failure.status == status
    assert failure.refresh_may_help is refresh
    assert failure.transient is transient
    assert failure.likely_cause == cause


@pytest.mark.parametrize(
    ("status", "body"),
    [
        pytest.param(200, EXPIRED, id="2xx-is-never-a-failure"),
        pytest.param(204, b"", id="204"),
        pytest.param(
            400, arr("MALFORMED_QUERY", "unexpected token: FROMM"), id="soql-error-is-the-callers"
        ),
        pytest.param(404, arr("NOT_FOUND", "The requested resource does not exist"), id="404"),
        pytest.param(400, b"not json at all", id="non-json-400"),
        pytest.param(400, b'[1, 2, {"message": 3}]', id="garbage-array"),
        pytest.param(403, b"Forbidden", id="plain-403-other-text"),
        pytest.param(500, arr("UNKNOWN_EXCEPTION", "An unexpected error occurred"), id="500"),
    ],
)
def test_ordinary_errors_are_left_to_the_caller(status: int, body: bytes) -> None:
    assert classify_api_response(status, {}, body) is None


def test_message_and_code_are_reported() -> None:
    failure = classify_api_response(401, {}, EXPIRED)
    assert failure is not None
    assert failure.error_code == "INVALID_SESSION_ID"
    assert failure.message == "Session expired or invalid"


def test_retry_after_from_mapping_and_raw_asgi_headers() -> None:
    body = arr("SERVER_UNAVAILABLE", "x")
    by_map = classify_api_response(503, {"Retry-After": "30"}, body)
    by_raw = classify_api_response(503, [(b"retry-after", b"45")], body)
    bad = classify_api_response(503, [("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT")], body)
    assert by_map is not None
    assert by_map.retry_after == 30.0
    assert by_raw is not None
    assert by_raw.retry_after == 45.0
    assert bad is not None
    assert bad.retry_after is None


def test_huge_bodies_are_not_parsed_but_maintenance_is_still_seen() -> None:
    big = b"[" + b" " * 70_000 + MAINT[1:]
    failure = classify_api_response(400, {}, big)
    # Too big to parse on the hot path; the code is past the first 4 KiB so not seen either.
    assert failure is None
    small_text = b"error: INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
    failure = classify_api_response(400, {}, small_text)
    assert failure is not None
    assert failure.kind == "maintenance"
