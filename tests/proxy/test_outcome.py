"""A proxied call's cause word and Retry-After (src/tokenkeep/proxy/outcome.py), no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tokenkeep.errors import (
    ActionRequiredError,
    NeedsReauthError,
    NotFoundError,
    OrgWritePausedError,
    TokenkeepError,
    TransientUpstreamError,
)
from tokenkeep.oauth.errors import UpstreamTransportError
from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer
from tokenkeep.proxy.outcome import (
    DEFAULT_RETRY_AFTER_503,
    DEFAULT_RETRY_AFTER_LIMIT,
    REFRESHED,
    Refreshed,
    error_retry_after,
    relayed_retry_after,
    replay_accepted,
    replay_cause,
    replay_evidence,
)
from tokenkeep.vocabulary import Cause

OK = ApiAnswer(AnswerKind.OK, 200)
DEAD = ApiAnswer(AnswerKind.SESSION_INVALID, 401, "INVALID_SESSION_ID", "Session expired")
UNUSABLE = ApiAnswer(AnswerKind.SESSION_UNUSABLE, 401, "INVALID_SESSION_ID", "not valid")
MAINTENANCE = ApiAnswer(AnswerKind.MAINTENANCE, 400, "INSERT_UPDATE_DELETE_NOT_ALLOWED")
WRONG = ApiAnswer(AnswerKind.WRONG_INSTANCE, 400, "URL_NOT_RESET")
NOT_FOUND = ApiAnswer(AnswerKind.OK, 404)
LIMIT = ApiAnswer(AnswerKind.LIMITED, 403, "REQUEST_LIMIT_EXCEEDED")
UNAVAILABLE = ApiAnswer(AnswerKind.LIMITED, 503)

CASES = [
    # id, first, refreshed, replay, cause
    ("success", OK, None, None, None),
    ("client-error-is-the-callers", NOT_FOUND, None, None, None),
    ("maintenance", MAINTENANCE, None, None, Cause.MAINTENANCE),
    ("wrong-instance", WRONG, None, None, Cause.WRONG_INSTANCE),
    ("not-valid-for-rest-is-not-refreshed", UNUSABLE, None, None, Cause.UNKNOWN),
    ("replay-accepted-after-refresh", DEAD, REFRESHED, OK, None),
    ("replay-accepted-client-error", DEAD, REFRESHED, NOT_FOUND, None),
    ("replay-meets-maintenance", DEAD, REFRESHED, MAINTENANCE, Cause.MAINTENANCE),
    ("fresh-token-refused-again", DEAD, REFRESHED, DEAD, Cause.UNKNOWN),
    ("fresh-token-not-valid-for-rest", DEAD, REFRESHED, UNUSABLE, Cause.UNKNOWN),
    ("streamed-body-refreshed-for-next-call", DEAD, REFRESHED, None, Cause.EXPIRED),
    ("refresh-revoked", DEAD, Refreshed(Cause.REVOKED), None, Cause.REVOKED),
    ("refresh-needs-an-admin", DEAD, Refreshed(Cause.IP_LOCKED), None, Cause.IP_LOCKED),
    ("refresh-failed-otherwise", DEAD, Refreshed(Cause.UNKNOWN), None, Cause.UNKNOWN),
]


@pytest.mark.parametrize(
    ("first", "refreshed", "replay", "cause"),
    [pytest.param(*row[1:], id=str(row[0])) for row in CASES],
)
def test_replay_cause(
    first: ApiAnswer, refreshed: Refreshed | None, replay: ApiAnswer | None, cause: Cause | None
) -> None:
    assert replay_cause(first, refreshed, replay) == cause


def test_only_a_replay_that_was_not_refused_confirms_an_expiry() -> None:
    assert replay_accepted(OK)
    assert replay_accepted(NOT_FOUND)
    assert replay_accepted(MAINTENANCE)
    assert not replay_accepted(DEAD)
    assert not replay_accepted(UNUSABLE)


def test_evidence_is_the_answer_the_client_gets() -> None:
    assert replay_evidence(MAINTENANCE, None) == MAINTENANCE.evidence()
    assert replay_evidence(DEAD, UNUSABLE) == {**UNUSABLE.evidence(), "retried": True}


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (NeedsReauthError("gone", reason="revoked:inactive_user"), Cause.REVOKED),
        (ActionRequiredError("admin", details={"cause": "ip_locked"}), Cause.IP_LOCKED),
        (ActionRequiredError("admin", reason="api_client_control:x"), Cause.API_CLIENT_CONTROL),
        (ActionRequiredError("admin", details={"cause": "misconfigured"}), Cause.UNKNOWN),
        (TransientUpstreamError("later"), Cause.UNKNOWN),
        (NotFoundError("no such connection"), Cause.UNKNOWN),
    ],
)
def test_a_failed_refresh_names_the_errors_cause(exc: TokenkeepError, cause: Cause) -> None:
    assert Refreshed.failed(exc).failure == cause


def test_our_retry_after_for_relayed_limits() -> None:
    assert relayed_retry_after(LIMIT) == DEFAULT_RETRY_AFTER_LIMIT
    assert relayed_retry_after(UNAVAILABLE) == DEFAULT_RETRY_AFTER_503
    assert relayed_retry_after(OK) is None
    assert relayed_retry_after(MAINTENANCE) is None


NOW = 1_700_000_000.0
IN_A_MINUTE = datetime.fromtimestamp(NOW + 60, UTC).isoformat()
IN_A_MINUTE_NAIVE = datetime.fromtimestamp(NOW + 60, UTC).replace(tzinfo=None).isoformat()


@pytest.mark.parametrize(
    ("exc", "seconds"),
    [
        (OrgWritePausedError("paused", retry_after=12.2), 13),
        (OrgWritePausedError("paused", retry_after=0), 1),
        (UpstreamTransportError("503", kind="http_status", status=503, retry_after=7), 7),
        (TransientUpstreamError("backoff", retry_at=NOW + 41.5), 42),
        (TransientUpstreamError("backoff", retry_at=NOW - 10), 1),
        (TransientUpstreamError("down"), DEFAULT_RETRY_AFTER_503),
        (NeedsReauthError("gone"), None),
        (NotFoundError("no such connection"), None),
    ],
)
def test_our_errors_retry_after(exc: TokenkeepError, seconds: int | None) -> None:
    assert error_retry_after(exc, NOW) == seconds
