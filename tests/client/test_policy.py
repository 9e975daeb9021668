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
    Report,
    Send,
    aimed,
    call_flow,
    origin,
    renew_flow,
    session_rejected,
    session_unusable,
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
    # The replay is refused too: a refresh was not the fix. The gateway is told, and the
    # call ends with that answer, no third send.
    assert flow.send((401, DEAD.encode())) == Report(401, DEAD.encode(), NEW)
    assert _finish(flow, None) == NEW


def test_a_replay_that_works_is_not_reported() -> None:
    flow = call_flow(OLD)
    next(flow)
    flow.send((401, DEAD.encode()))
    assert flow.send(NEW) == Send(NEW)
    assert _finish(flow, (200, b"")) == NEW


def test_a_replay_refused_for_another_reason_is_not_reported() -> None:
    flow = call_flow(OLD)
    next(flow)
    flow.send((401, DEAD.encode()))
    flow.send(NEW)
    assert _finish(flow, (404, b'[{"errorCode":"NOT_FOUND","message":"gone"}]')) == NEW


def test_a_session_no_refresh_fixes_is_reported_not_renewed() -> None:
    not_for_rest = (
        b'[{"errorCode":"INVALID_SESSION_ID","message":"This session is not valid for '
        b'use with the REST API"}]'
    )
    assert session_unusable(401, not_for_rest)
    assert not session_unusable(401, DEAD.encode())
    assert not session_unusable(200, b"")
    flow = call_flow(OLD)
    next(flow)
    assert flow.send((401, not_for_rest)) == Report(401, not_for_rest, OLD)
    assert _finish(flow, None) == OLD


def test_the_same_token_back_is_reported_not_replayed() -> None:
    """The gateway has nothing newer than the refused token: replaying it would be refused
    the same way, so the first answer is reported and is the caller's answer."""
    flow = call_flow(OLD)
    next(flow)
    assert flow.send((401, DEAD.encode())) == Renew(OLD)
    same = Token(Secret("old-token"), "https://na1.example", version=3)
    assert flow.send(same) == Report(401, DEAD.encode(), OLD)
    assert _finish(flow, None) == same


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


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://NA1.example/services/data?q=1", "https://na1.example"),
        ("https://na1.example:443/x", "https://na1.example"),
        ("http://127.0.0.1:8500/x", "http://127.0.0.1:8500"),
        ("http://[::1]:80/x", "http://[::1]"),
        ("/services/data", ""),
        ("http://host:notaport/x", ""),
    ],
)
def test_origin(url: str, expected: str) -> None:
    assert origin(url) == expected


def test_aimed_moves_only_urls_on_a_former_instance() -> None:
    former = {"http://127.0.0.1:8501"}
    new = "http://127.0.0.1:8502"
    url = "http://127.0.0.1:8501/services/data/v60.0/query?q=SELECT%20Id#frag"
    assert aimed(url, new, former) == (
        "http://127.0.0.1:8502/services/data/v60.0/query?q=SELECT%20Id#frag"
    )
    # The current instance, another host, and a relative URL are left alone.
    assert aimed(new + "/x", new, former) == new + "/x"
    assert aimed("http://127.0.0.1:8500/x", new, former) == "http://127.0.0.1:8500/x"
    assert aimed("https://127.0.0.1:8501/x", new, former) == "https://127.0.0.1:8501/x"
    assert aimed("/x", new, former) == "/x"
    assert aimed(url, new, set()) == url
