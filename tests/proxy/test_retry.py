"""Retry-once policy (src/tokenkeep/proxy/retry.py), fed by the answer reader."""

from __future__ import annotations

import json

import pytest

from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer, read_api_answer
from tokenkeep.proxy.retry import (
    PEEK_BYTES,
    Action,
    decide,
    is_write,
    needs_body,
    resend_after_drop,
)


def _sf_error(code: str, message: str) -> bytes:
    return json.dumps([{"message": message, "errorCode": code}]).encode()


EXPIRED = _sf_error("INVALID_SESSION_ID", "Session expired or invalid")
NOT_FOR_REST = _sf_error(
    "INVALID_SESSION_ID", "This session is not valid for use with the REST API"
)


def test_expired_session_is_refreshed_and_replayed_once() -> None:
    answer = read_api_answer(401, EXPIRED)
    assert answer.kind is AnswerKind.SESSION_INVALID
    assert decide(answer, replayable=True, replayed=False) is Action.REFRESH_AND_REPLAY


def test_key_order_and_reversed_fields_do_not_matter() -> None:
    body = b'[{"errorCode":"INVALID_SESSION_ID","message":"Session expired or invalid"}]'
    assert read_api_answer(401, body).kind is AnswerKind.SESSION_INVALID


def test_the_replay_is_never_replayed_again() -> None:
    answer = read_api_answer(401, EXPIRED)
    assert decide(answer, replayable=True, replayed=True) is Action.PASS


def test_a_streamed_body_refreshes_without_replaying() -> None:
    answer = read_api_answer(401, EXPIRED)
    assert decide(answer, replayable=False, replayed=False) is Action.REFRESH_ONLY


def test_identity_endpoint_bad_oauth_token_is_recoverable() -> None:
    answer = read_api_answer(403, b"Bad_OAuth_Token")
    assert answer.kind is AnswerKind.SESSION_INVALID
    assert decide(answer, replayable=True, replayed=False) is Action.REFRESH_AND_REPLAY


def test_not_valid_for_rest_api_is_not_recoverable_by_refresh() -> None:
    answer = read_api_answer(401, NOT_FOR_REST)
    assert answer.kind is AnswerKind.SESSION_UNUSABLE
    assert decide(answer, replayable=True, replayed=False) is Action.PASS


REFRESHABLE = (AnswerKind.SESSION_INVALID, AnswerKind.WRONG_INSTANCE)


@pytest.mark.parametrize("kind", [k for k in AnswerKind if k not in REFRESHABLE])
def test_only_a_dead_session_or_the_wrong_host_is_refreshed(kind: AnswerKind) -> None:
    answer = ApiAnswer(kind, 400)
    assert decide(answer, replayable=True, replayed=False) is Action.PASS
    assert decide(answer, replayable=False, replayed=False) is Action.PASS


def test_url_not_reset_is_refreshed_once_the_token_answer_names_the_host() -> None:
    answer = read_api_answer(400, b'[{"errorCode":"URL_NOT_RESET","message":"Destination"}]')
    assert answer.kind is AnswerKind.WRONG_INSTANCE
    assert decide(answer, replayable=True, replayed=False) is Action.REFRESH_AND_REPLAY
    assert decide(answer, replayable=True, replayed=True) is Action.PASS


def test_the_proxy_peeks_at_what_the_reader_reads() -> None:
    big = b" " * PEEK_BYTES + EXPIRED
    assert read_api_answer(401, big[:PEEK_BYTES]).kind is AnswerKind.OK
    assert read_api_answer(401, EXPIRED).kind is AnswerKind.SESSION_INVALID


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


@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT", "DELETE", "patch"])
def test_a_dropped_write_is_never_resent(method: str) -> None:
    assert not resend_after_drop(method, replayable=True, resent=False)


def test_a_dropped_read_is_resent_once_if_its_body_can_be() -> None:
    assert resend_after_drop("GET", replayable=True, resent=False)
    assert resend_after_drop("HEAD", replayable=True, resent=False)
    assert not resend_after_drop("GET", replayable=True, resent=True)  # never twice
    assert not resend_after_drop("GET", replayable=False, resent=False)  # streamed body
