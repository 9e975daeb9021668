"""read_api_answer (src/tokenkeep/providers/salesforce_answers.py): the one reader of
Salesforce API answers, used by the proxy on every error status and by the SDK on a 401/403.
"""

from __future__ import annotations

import json

import pytest

from tokenkeep.providers.salesforce_answers import (
    HEAD_BYTES,
    AnswerKind,
    read_api_answer,
    retry_after_seconds,
)
from tokenkeep.vocabulary import Cause


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
MAINT_CODE = "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"

K = AnswerKind
CASES = [
    # id, status, body, kind, error_code, refresh_may_help, transient, cause
    ("expired-session", 401, EXPIRED, K.SESSION_INVALID, "INVALID_SESSION_ID", True, False,
     None),
    ("expired-session-reversed-keys", 401,
     arr("INVALID_SESSION_ID", "Session expired or invalid", reverse=True),
     K.SESSION_INVALID, "INVALID_SESSION_ID", True, False, None),
    ("not-valid-for-rest", 401, NOT_REST, K.SESSION_UNUSABLE, "INVALID_SESSION_ID", False,
     False, None),
    ("not-valid-for-rest-reversed", 401,
     arr("INVALID_SESSION_ID", "This session is not valid for use with the REST API",
         reverse=True),
     K.SESSION_UNUSABLE, "INVALID_SESSION_ID", False, False, None),
    # A 401 without INVALID_SESSION_ID is not read as a dead session (the proxy's rule).
    ("401-html-body", 401, b"<html>nope</html>", K.OK, None, False, False, None),
    ("401-empty-body", 401, b"", K.OK, None, False, False, None),
    ("401-not-json", 401, b"not json", K.OK, None, False, False, None),
    ("401-truncated-json", 401, b'{"truncated": ', K.OK, None, False, False, None),
    # Not a session answer (kind OK), but its errorCode is kept for the operation log.
    ("invalid-session-not-on-401", 400, EXPIRED, K.OK, "INVALID_SESSION_ID", False, False, None),
    ("bad-oauth-token-plain-text", 403, b"Bad_OAuth_Token", K.SESSION_INVALID,
     "Bad_OAuth_Token", True, False, None),
    ("bad-oauth-token-trailing-newline", 403, b"Bad_OAuth_Token\n", K.SESSION_INVALID,
     "Bad_OAuth_Token", True, False, None),
    ("bad-oauth-token-and-more", 403, b"Bad_OAuth_Token_but_more", K.OK, None, False, False,
     None),
    ("url-not-reset", 400,
     arr("URL_NOT_RESET", "Destination URL not reset. The URL returned from login must be set"),
     K.WRONG_INSTANCE, "URL_NOT_RESET", False, False, Cause.WRONG_INSTANCE),
    ("request-limit", 403, arr("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
     K.LIMITED, "REQUEST_LIMIT_EXCEEDED", False, True, None),
    ("api-disabled", 403,
     arr("API_DISABLED_FOR_ORG", "The REST API is not enabled for this Organization."),
     K.API_DISABLED, "API_DISABLED_FOR_ORG", False, False, None),
    ("maintenance-400", 400, MAINT, K.MAINTENANCE, MAINT_CODE, False, True, Cause.MAINTENANCE),
    ("maintenance-503", 503, MAINT, K.MAINTENANCE, MAINT_CODE, False, True, Cause.MAINTENANCE),
    ("maintenance-second-entry", 400,
     json.dumps([{"errorCode": "FIELD_X", "message": "x"},
                 {"message": "m", "errorCode": MAINT_CODE}]).encode(),
     K.MAINTENANCE, MAINT_CODE, False, True, Cause.MAINTENANCE),
    ("api-disabled-never-hides-maintenance", 400,
     json.dumps([{"errorCode": "API_DISABLED_FOR_ORG", "message": "x"},
                 {"message": "m", "errorCode": MAINT_CODE}]).encode(),
     K.MAINTENANCE, MAINT_CODE, False, True, Cause.MAINTENANCE),
    ("server-unavailable", 503, arr("SERVER_UNAVAILABLE", "Server unavailable"),
     K.LIMITED, None, False, True, None),
    ("503-html", 503, b"<html>Service Unavailable</html>", K.LIMITED, None, False, True, None),
    ("503-empty", 503, b"", K.LIMITED, None, False, True, None),
    # A 502 passes through untouched (the proxy's rule: no Retry-After of ours).
    ("502-gateway", 502, b"", K.OK, None, False, False, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "kind", "code", "refresh", "transient", "cause"),
    [pytest.param(*row[1:], id=str(row[0])) for row in CASES],
)
def test_recognised_answers(  # noqa: PLR0917 (one parameter per table column)
    status: int,
    body: bytes,
    kind: AnswerKind,
    code: str | None,
    refresh: bool,
    transient: bool,
    cause: Cause | None,
) -> None:
    answer = read_api_answer(status, body)
    assert answer.kind is kind
    assert answer.status == status
    assert answer.error_code == code
    assert answer.refresh_may_help is refresh
    assert answer.transient is transient
    assert answer.cause == cause


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
    answer = read_api_answer(status, body)
    assert answer.kind is AnswerKind.OK
    assert answer.cause is None
    assert not answer.refresh_may_help
    assert not answer.transient


def test_message_and_code_are_reported() -> None:
    answer = read_api_answer(401, EXPIRED)
    assert answer.error_code == "INVALID_SESSION_ID"
    assert answer.message == "Session expired or invalid"
    assert answer.evidence() == {
        "status": 401,
        "error_code": "INVALID_SESSION_ID",
        "message": "Session expired or invalid",
    }


def test_successful_answers_are_shared_values() -> None:
    # The proxy reads every answer: a success allocates nothing.
    assert read_api_answer(200, b"") is read_api_answer(200, b"x")
    assert read_api_answer(200, b"").kind is AnswerKind.OK


def test_retry_after_from_mapping_and_raw_asgi_headers() -> None:
    body = arr("SERVER_UNAVAILABLE", "x")
    by_map = read_api_answer(503, body, {"Retry-After": "30"})
    by_raw = read_api_answer(503, body, [(b"retry-after", b"45")])
    bad = read_api_answer(503, body, [("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT")])
    assert by_map.retry_after == 30.0
    assert by_raw.retry_after == 45.0
    assert bad.retry_after is None
    assert read_api_answer(503, body).retry_after is None  # no headers passed: not read
    # Only a transient answer carries one.
    assert read_api_answer(401, EXPIRED, {"Retry-After": "30"}).retry_after is None
    assert retry_after_seconds({"retry-after": "-5"}) == 0.0
    assert retry_after_seconds({}) is None


def test_only_the_head_is_read_and_only_json_errors_count() -> None:
    big = b"[" + b" " * 70_000 + MAINT[1:]
    # The reader looks at the first HEAD_BYTES only (what the proxy peeks at): not seen.
    assert len(big) > HEAD_BYTES
    assert read_api_answer(400, big).kind is AnswerKind.OK
    # The code in a text that is not a JSON error array is not read as maintenance.
    small_text = b"error: INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
    assert read_api_answer(400, small_text).kind is AnswerKind.OK
