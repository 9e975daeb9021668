"""The cause word of a proxied call from what the proxy alone saw (first answer, refresh,
replay): ``classify(evidence_of(failure))``, the diagnosis before any probe."""

from __future__ import annotations

import pytest

from tokenkeep.diagnosis.classify import classify
from tokenkeep.diagnosis.service import ProxiedFailure, evidence_of
from tokenkeep.errors import (
    ActionRequiredError,
    NeedsReauthError,
    TokenkeepError,
    TransientUpstreamError,
)
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer
from tokenkeep.secret import Secret
from tokenkeep.vocabulary import Cause

OK = ApiAnswer(AnswerKind.OK, 200)
DEAD = ApiAnswer(AnswerKind.SESSION_INVALID, 401, "INVALID_SESSION_ID", "Session expired")
UNUSABLE = ApiAnswer(
    AnswerKind.SESSION_UNUSABLE,
    401,
    "INVALID_SESSION_ID",
    "This session is not valid for use with the REST API",
)
MAINTENANCE = ApiAnswer(
    AnswerKind.MAINTENANCE, 400, "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
)
WRONG = ApiAnswer(AnswerKind.WRONG_INSTANCE, 400, "URL_NOT_RESET")
NOT_FOUND = ApiAnswer(AnswerKind.OK, 404)
HOST = "http://127.0.0.1:8501"
TOKEN = FreshToken("c1", "00D1", HOST, Secret("at-old"), 3, issued_to_address="127.0.0.1")
FRESH = FreshToken("c1", "00D1", HOST, Secret("at-new"), 4, issued_to_address="127.0.0.1")
MOVED = FreshToken("c1", "00D1", "http://127.0.0.1:8599", Secret("at-new"), 4)
NO = object()  # no refresh tried

CASES = [
    # id, first, refresh (NO | None = ok | error), fresh, replay, cause
    ("expired-is-named", DEAD, None, FRESH, OK, Cause.EXPIRED),
    ("replay-client-error-is-still-recovered", DEAD, None, FRESH, NOT_FOUND, Cause.EXPIRED),
    ("replay-meets-maintenance", DEAD, None, FRESH, MAINTENANCE, Cause.MAINTENANCE),
    ("fresh-token-refused-again", DEAD, None, FRESH, DEAD, Cause.UNKNOWN),
    ("fresh-token-not-valid-for-rest", DEAD, None, FRESH, UNUSABLE, Cause.API_CLIENT_CONTROL),
    ("streamed-body-refreshed-for-next-call", DEAD, None, FRESH, None, Cause.EXPIRED),
    ("not-valid-for-rest-unprobed", UNUSABLE, NO, None, None, Cause.API_CLIENT_CONTROL),
    ("maintenance", MAINTENANCE, NO, None, None, Cause.MAINTENANCE),
    ("wrong-instance-fixed", WRONG, None, MOVED, OK, Cause.WRONG_INSTANCE),
    ("wrong-instance-unfixed", WRONG, None, FRESH, WRONG, Cause.WRONG_INSTANCE),
    (
        "refresh-revoked",
        DEAD,
        NeedsReauthError("gone", reason="revoked:inactive_user"),
        None,
        None,
        Cause.REVOKED,
    ),
    (
        "refresh-needs-an-admin",
        DEAD,
        ActionRequiredError("admin", reason="ip_locked:login_ip_restricted"),
        None,
        None,
        Cause.IP_LOCKED,
    ),
    (
        "refresh-503-is-not-revoked",
        DEAD,
        TransientUpstreamError("later"),
        None,
        None,
        Cause.UNKNOWN,
    ),
]


@pytest.mark.parametrize(
    ("first", "refresh", "fresh", "replay", "cause"),
    [pytest.param(*row[1:], id=str(row[0])) for row in CASES],
)
def test_the_cause_of_a_proxied_call(
    first: ApiAnswer,
    refresh: object,
    fresh: FreshToken | None,
    replay: ApiAnswer | None,
    cause: Cause,
) -> None:
    error = refresh if isinstance(refresh, TokenkeepError) else None
    failure = ProxiedFailure(
        "c1",
        first,
        TOKEN,
        local_address="127.0.0.1",
        refreshed=refresh is not NO,
        refresh_error=error,
        fresh=fresh,
        replay=replay,
    )
    assert classify(evidence_of(failure)).cause == cause
