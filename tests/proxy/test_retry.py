"""Retry-once policy (src/tokenkeep/proxy/retry.py)."""

from __future__ import annotations

import json

import pytest

from tokenkeep.proxy.retry import Action, Kind, decide, inspect_response, is_write, needs_body


def _sf_error(code: str, message: str) -> bytes:
    return json.dumps([{"message": message, "errorCode": code}]).encode()


EXPIRED = _sf_error("INVALID_SESSION_ID", "Session expired or invalid")
NOT_FOR_REST = _sf_error(
    "INVALID_SESSION_ID", "This session is not valid for use with the REST API"
)
MAINTENANCE = _sf_error(
    "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE",
    "Updates can't be made during maintenance. Try again when maintenance is complete.",
)


def test_expired_session_is_refreshed_and_replayed_once() -> None:
    finding = inspect_response(401, EXPIRED)
    assert finding.kind is Kind.SESSION_INVALID
    assert decide(finding, replayable=True, replayed=False) is Action.REFRESH_AND_REPLAY


def test_key_order_and_reversed_fields_do_not_matter() -> None:
    body = b'[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]'
    assert inspect_response(401, body).kind is Kind.SESSION_INVALID


def test_the_replay_is_never_replayed_again() -> None:
    finding = inspect_response(401, EXPIRED)
    assert decide(finding, replayable=True, replayed=True) is Action.PASS


def test_a_streamed_body_refreshes_without_replaying() -> None:
    finding = inspect_response(401, EXPIRED)
    assert decide(finding, replayable=False, replayed=False) is Action.REFRESH_ONLY


def test_identity_endpoint_bad_oauth_token_is_recoverable() -> None:
    finding = inspect_response(403, b"Bad_OAuth_Token")
    assert finding.kind is Kind.SESSION_INVALID
    assert decide(finding, replayable=True, replayed=False) is Action.REFRESH_AND_REPLAY


def test_not_valid_for_rest_api_is_not_recoverable_by_refresh() -> None:
    finding = inspect_response(401, NOT_FOR_REST)
    assert finding.kind is Kind.SESSION_UNUSABLE
    assert decide(finding, replayable=True, replayed=False) is Action.PASS


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, EXPIRED, Kind.OK),  # a record may mention anything; success is success
        (403, _sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), Kind.LIMITED),
        (503, b"", Kind.LIMITED),
        (400, _sf_error("URL_NOT_RESET", "Destination URL not reset."), Kind.WRONG_INSTANCE),
        (400, _sf_error("MALFORMED_QUERY", "unexpected token"), Kind.OK),
        (401, b"not json", Kind.OK),
        (401, b'{"truncated": ', Kind.OK),
        (403, b"Bad_OAuth_Token_but_more", Kind.OK),
        (400, MAINTENANCE, Kind.MAINTENANCE),
        (503, MAINTENANCE, Kind.MAINTENANCE),
    ],
)
def test_inspect_response(status: int, body: bytes, kind: Kind) -> None:
    finding = inspect_response(status, body)
    assert finding.kind is kind
    assert decide(finding, replayable=True, replayed=False) is Action.PASS


def test_cause_words() -> None:
    assert inspect_response(400, MAINTENANCE).cause == "maintenance"
    assert inspect_response(400, _sf_error("URL_NOT_RESET", "x")).cause == "wrong_instance"
    assert inspect_response(401, EXPIRED).cause is None
    evidence = inspect_response(401, EXPIRED).evidence()
    assert evidence == {
        "status": 401,
        "error_code": "INVALID_SESSION_ID",
        "message": "Session expired or invalid",
    }


def test_writes_and_body_needs() -> None:
    assert [m for m in ("GET", "HEAD", "POST", "patch", "PUT", "DELETE") if is_write(m)] == [
        "POST",
        "patch",
        "PUT",
        "DELETE",
    ]
    assert needs_body(401, "GET")
    assert needs_body(403, "GET")
    assert needs_body(400, "GET")  # URL_NOT_RESET
    assert needs_body(500, "POST")  # maintenance may use any error status
    assert not needs_body(200, "POST")
    assert not needs_body(404, "GET")
