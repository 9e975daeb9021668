"""A proxied call's cause word and Retry-After (src/tokenkeep/proxy/outcome.py), no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tokenkeep.errors import (
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
    error_retry_after,
    relayed_retry_after,
)

OK = ApiAnswer(AnswerKind.OK, 200)
DEAD = ApiAnswer(AnswerKind.SESSION_INVALID, 401, "INVALID_SESSION_ID", "Session expired")
UNUSABLE = ApiAnswer(AnswerKind.SESSION_UNUSABLE, 401, "INVALID_SESSION_ID", "not valid")
MAINTENANCE = ApiAnswer(AnswerKind.MAINTENANCE, 400, "INSERT_UPDATE_DELETE_NOT_ALLOWED")
WRONG = ApiAnswer(AnswerKind.WRONG_INSTANCE, 400, "URL_NOT_RESET")
NOT_FOUND = ApiAnswer(AnswerKind.OK, 404)
LIMIT = ApiAnswer(AnswerKind.LIMITED, 403, "REQUEST_LIMIT_EXCEEDED")
UNAVAILABLE = ApiAnswer(AnswerKind.LIMITED, 503)


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
