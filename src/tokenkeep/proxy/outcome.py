"""What a proxied call ends as: its cause word and its ``Retry-After``. Pure functions.

After the retry-once (:mod:`.retry`) the proxy knows up to three things: the first answer,
what the refresh gave (nothing was tried, a newer token, or a failure), and the replay's
answer. :func:`replay_cause` turns them into the cause word the call is labelled with
(``Tokenkeep-Cause``, the operation log, the cause report); :func:`replay_accepted` says
whether the replay proved the rejected token had merely expired (only then does the
lifecycle learn from it). The cause words are :class:`~tokenkeep.vocabulary.Cause`.

``Retry-After``: a relayed limit that Salesforce sent without one gets ours
(:func:`relayed_retry_after`), and our own errors carry one when they know when to come
back (:func:`error_retry_after`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tokenkeep.errors import OrgWritePausedError, TokenkeepError, TransientUpstreamError
from tokenkeep.oauth.errors import UpstreamTransportError
from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer
from tokenkeep.vocabulary import Cause

__all__ = [
    "DEFAULT_RETRY_AFTER_503",
    "DEFAULT_RETRY_AFTER_LIMIT",
    "REFRESHED",
    "Refreshed",
    "error_retry_after",
    "relayed_retry_after",
    "replay_accepted",
    "replay_cause",
    "replay_evidence",
]

#: ``Retry-After`` (seconds) added to a passed-through 503 that Salesforce sent without
#: one, and to our own 503s that carry no better hint: a short outage or a refresh backoff.
DEFAULT_RETRY_AFTER_503 = 30
#: ``Retry-After`` (seconds) added to ``REQUEST_LIMIT_EXCEEDED`` when Salesforce sent none.
#: The daily API limit is a rolling 24-hour window, so no exact reset time exists;
#: 5 minutes is a conservative pause that lets usage roll off without hammering the org.
DEFAULT_RETRY_AFTER_LIMIT = 300

_REFUSED = frozenset({AnswerKind.SESSION_INVALID, AnswerKind.SESSION_UNUSABLE})


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What the refresh after a rejection gave: a newer token (``failure`` None), or the
    cause word it failed with."""

    failure: Cause | None = None

    @classmethod
    def failed(cls, exc: TokenkeepError) -> Refreshed:
        """The refresh raised ``exc``: its cause (``revoked``, an admin's cause word), else
        ``unknown`` (a transient failure names no cause)."""
        return cls(exc.cause or Cause.UNKNOWN)


#: The refresh returned a newer token.
REFRESHED = Refreshed()


def replay_accepted(replay: ApiAnswer) -> bool:
    """The replay with a fresh token was not refused as a session: the old one had expired."""
    return replay.kind not in _REFUSED


def replay_cause(
    first: ApiAnswer, refreshed: Refreshed | None, replay: ApiAnswer | None
) -> Cause | None:
    """The cause word of a call: ``first`` answer, the refresh (None: none was tried), and
    the ``replay``'s answer (None: not replayed)."""
    if refreshed is None:
        # A session a refresh does not fix: IP lock, API Client Control, ... (diagnosis
        # tells them apart, the proxy does not guess).
        return Cause.UNKNOWN if first.kind is AnswerKind.SESSION_UNUSABLE else first.cause
    if refreshed.failure is not None:
        return refreshed.failure
    if replay is None:
        return Cause.EXPIRED  # refreshed for the next call; this body was streamed
    if not replay_accepted(replay):
        # A token fresh from the token endpoint was refused at once: not an expiry.
        return Cause.UNKNOWN
    return replay.cause


def replay_evidence(first: ApiAnswer, replay: ApiAnswer | None) -> dict[str, Any]:
    """What the cause report carries: the answer the client gets, marked when replayed."""
    if replay is None:
        return first.evidence()
    return {**replay.evidence(), "retried": True}


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
