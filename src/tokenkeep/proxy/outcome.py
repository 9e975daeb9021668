"""What a proxied call ends as: which answers get a diagnosis, and its ``Retry-After``.

After the retry-once (:mod:`.retry`) the proxy knows up to three things: the first answer,
what the refresh gave (nothing was tried, a newer token, or a failure), and the replay's
answer. For the answers in :data:`NEEDS_VERDICT` it hands them to the diagnosis
(:meth:`tokenkeep.diagnosis.service.Diagnoser.settle`), which names the cause word the call
is labelled with (``Tokenkeep-Cause``, the log) and acts on it.

``Retry-After``: a relayed limit that Salesforce sent without one gets ours
(:func:`relayed_retry_after`), and our own errors carry one when they know when to come
back (:func:`error_retry_after`).
"""

from __future__ import annotations

import math

from tokenkeep.errors import OrgWritePausedError, TokenkeepError, TransientUpstreamError
from tokenkeep.oauth.errors import UpstreamTransportError
from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer

__all__ = [
    "DEFAULT_RETRY_AFTER_503",
    "DEFAULT_RETRY_AFTER_LIMIT",
    "NEEDS_VERDICT",
    "error_retry_after",
    "relayed_retry_after",
]

#: ``Retry-After`` (seconds) added to a passed-through 503 that Salesforce sent without
#: one, and to our own 503s that carry no better hint: a short outage or a refresh backoff.
DEFAULT_RETRY_AFTER_503 = 30
#: ``Retry-After`` (seconds) added to ``REQUEST_LIMIT_EXCEEDED`` when Salesforce sent none.
#: The daily API limit is a rolling 24-hour window, so no exact reset time exists;
#: 5 minutes is a conservative pause that lets usage roll off without hammering the org.
DEFAULT_RETRY_AFTER_LIMIT = 300

#: First answers the diagnosis names a cause for (after the retry-once, if any): a dead
#: session, one a refresh cannot fix, or the wrong host.
NEEDS_VERDICT = frozenset(
    {AnswerKind.SESSION_INVALID, AnswerKind.SESSION_UNUSABLE, AnswerKind.WRONG_INSTANCE}
)


def relayed_retry_after(answer: ApiAnswer) -> int | None:
    """Our ``Retry-After`` for a relayed limit, used when Salesforce sent none."""
    if answer.kind is not AnswerKind.LIMITED:
        return None
    if answer.error_code == "REQUEST_LIMIT_EXCEEDED":
        return DEFAULT_RETRY_AFTER_LIMIT
    return DEFAULT_RETRY_AFTER_503


def error_retry_after(exc: TokenkeepError, now: float) -> int | None:
    """Whole seconds for our own error's ``Retry-After`` (``now``: our clock, epoch).

    The write pause's ``retry_after``, a transport failure's ``Retry-After``, the refresh
    backoff's ``retry_at``; else :data:`DEFAULT_RETRY_AFTER_503` for any other 503.
    """
    seconds: float | None = None
    if isinstance(exc, OrgWritePausedError | UpstreamTransportError):
        seconds = exc.retry_after
    if seconds is None:
        retry_at = exc.retry_at if isinstance(exc, TransientUpstreamError) else None
        if retry_at is not None:
            seconds = retry_at - now
    if seconds is not None:
        return max(1, math.ceil(seconds))
    if exc.status_code == 503:
        return DEFAULT_RETRY_AFTER_503
    return None
