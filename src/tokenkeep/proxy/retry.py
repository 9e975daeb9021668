"""Retry-once policy for proxied calls: plain functions over response values, no sockets.

What an upstream answer *says* is read by
:func:`tokenkeep.providers.salesforce_answers.read_api_answer` (status plus the first
:data:`PEEK_BYTES` of the body). This module answers the two questions of the transport:

1. :func:`needs_body` -- does the reader need the body's first bytes for this status? Only
   then does the proxy peek at them, so successful responses stream untouched.
2. :func:`decide` -- given the reading, whether the body can be replayed, and whether this
   was already the replay: pass the response through, refresh and replay once, or refresh
   only (a streamed body cannot be sent twice; the *next* call gets a good token).
3. :func:`resend_after_drop` -- the connection dropped before any answer: send it again?
   A read once; a write never (it may have been applied). aiohttp's own resend is off
   (:mod:`.upstream`), so this is the only one.

Never twice: a replayed request is never replayed again, whatever it answers.
"""

from __future__ import annotations

import enum

from tokenkeep.providers.salesforce_answers import HEAD_BYTES, AnswerKind, ApiAnswer
from tokenkeep.vocabulary import WRITE_METHODS, is_write  # re-exported: they moved down

__all__ = [
    "PEEK_BYTES",
    "WRITE_METHODS",
    "Action",
    "decide",
    "is_write",
    "needs_body",
    "resend_after_drop",
]

#: The body head the proxy peeks at on an error status: all the answer reader looks at.
PEEK_BYTES = HEAD_BYTES


#: A dead session, and the wrong host (``URL_NOT_RESET``: the token answer carries the
#: org's real ``instance_url``): one refresh may fix either.
_REFRESHABLE = frozenset({AnswerKind.SESSION_INVALID, AnswerKind.WRONG_INSTANCE})


class Action(enum.Enum):
    """What the proxy does with a response."""

    PASS = "pass"
    REFRESH_AND_REPLAY = "refresh_and_replay"
    REFRESH_ONLY = "refresh_only"


def needs_body(status: int, method: str) -> bool:
    """True when the answer reader needs the body's first bytes for this status."""
    if status in (401, 403):
        return True
    # Maintenance (any error status on a write), URL_NOT_RESET (400).
    return status >= 400 and (is_write(method) or status == 400)


def decide(answer: ApiAnswer, *, replayable: bool, replayed: bool) -> Action:
    """Refresh-and-replay once for a dead session or the wrong host; otherwise pass the
    response through (a session a refresh cannot fix goes to the diagnosis as it is).

    ``replayed`` is True for the response to the replay itself: it always passes (never a
    refresh loop). A body that was streamed cannot be replayed: the token is still refreshed
    so the client's own retry succeeds.
    """
    if answer.kind not in _REFRESHABLE or replayed:
        return Action.PASS
    return Action.REFRESH_AND_REPLAY if replayable else Action.REFRESH_ONLY


def resend_after_drop(method: str, *, replayable: bool, resent: bool) -> bool:
    """After the connection dropped with no answer: resend a read once (a stale keep-alive
    connection is the usual reason, and a read is safe twice); never a write, whose first
    copy Salesforce may have applied; never a streamed body; never twice."""
    return replayable and not resent and not is_write(method)
