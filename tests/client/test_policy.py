"""The SDK's retry-once policy (src/tokenkeep/client/_policy.py), step by step, no sockets."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest

from tokenkeep.client import Token
from tokenkeep.client._policy import (
    Fetch,
    Refresh,
    Renew,
    Send,
    call_flow,
    renew_flow,
    session_rejected,
    wants_body,
)
from tokenkeep.secret import Secret

OLD = Token(Secret("old-token"), "https://na1.example")
NEW = Token(Secret("new-token"), "https://na1.example")
DEAD = json.dumps([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])


def _finish(flow: Generator[Any, Any, Token], answer: Any) -> Token:
    with pytest.raises(StopIteration) as done:
        flow.send(answer)
    token: Token = done.value.value
    return token


@pytest.mark.parametrize(
    ("status", "body", "rejected"),
    [
        (401, DEAD.encode(), True),
        (403, b"Bad_OAuth_Token", True),
        (
            401,
            b'[{"errorCode":"INVALID_SESSION_ID","message":"This session is not valid for '
            b'use with the REST API"}]',
            False,
        ),
        (401, b"not json", False),
        (400, DEAD.encode(), False),
        (200, b"", False),
        (404, b'[{"errorCode":"NOT_FOUND","message":"gone"}]', False),
    ],
)
def test_session_rejected(status: int, body: bytes, rejected: bool) -> None:
    assert session_rejected(status, body) is rejected


def test_body_is_read_only_for_401_and_403() -> None:
    assert [s for s in (200, 201, 204, 400, 401, 403, 404, 500) if wants_body(s)] == [401, 403]


def test_a_good_answer_ends_the_call_with_the_remembered_token() -> None:
    flow = call_flow(OLD)
    assert next(flow) == Send(OLD)
    assert _finish(flow, (200, b"")) == OLD


def test_no_remembered_token_fetches_one_first() -> None:
    flow = call_flow(None)
    assert next(flow) == Fetch()
    assert flow.send(OLD) == Send(OLD)
    assert _finish(flow, (200, b"")) == OLD


def test_a_dead_session_renews_and_replays_exactly_once() -> None:
    flow = call_flow(OLD)
    assert next(flow) == Send(OLD)
    assert flow.send((401, DEAD.encode())) == Renew(OLD)
    assert flow.send(NEW) == Send(NEW)
    # The replay is refused too: the call ends with that answer, no third send.
    assert _finish(flow, (401, DEAD.encode())) == NEW


def test_other_errors_are_not_retried() -> None:
    flow = call_flow(OLD)
    next(flow)
    assert _finish(flow, (500, b"")) == OLD


def test_renew_uses_a_token_this_process_already_renewed() -> None:
    flow = renew_flow(OLD, NEW)
    with pytest.raises(StopIteration) as done:
        next(flow)
    assert done.value.value == NEW


def test_renew_names_the_rejected_version_in_one_call() -> None:
    rejected = Token(Secret("old-token"), "https://na1.example", version=7)
    flow = renew_flow(rejected, rejected)
    assert next(flow) == Refresh(rejected_version=7)
    assert _finish(flow, NEW) == NEW


def test_renew_uses_the_gateways_newer_token_without_refreshing() -> None:
    flow = renew_flow(OLD, OLD)
    assert next(flow) == Fetch()
    assert _finish(flow, NEW) == NEW


def test_renew_refreshes_only_when_the_gateway_still_holds_the_rejected_token() -> None:
    flow = renew_flow(OLD, None)
    assert next(flow) == Fetch()
    assert flow.send(Token(Secret("old-token"), "https://na1.example")) == Refresh()
    assert _finish(flow, NEW) == NEW


def test_a_streamed_body_is_not_replayed_but_the_token_is_renewed() -> None:
    flow = call_flow(OLD, replayable=False)
    assert next(flow) == Send(OLD)
    assert flow.send((401, DEAD.encode())) == Renew(OLD)
    assert _finish(flow, NEW) == NEW  # no second Send: the 401 is the answer
