"""Retry-once policy for proxied calls: plain functions over response values, no sockets.

The proxy asks two questions about every upstream response:

1. :func:`inspect_response` — what does this response say (a dead session, a session that a
   refresh will not fix, maintenance, a limit, or nothing of interest)? It needs the status,
   the headers and the first bytes of the body (:data:`PEEK_BYTES`; Salesforce's error
   bodies are tiny). :func:`needs_body` tells the transport when those bytes are needed, so
   successful responses stream untouched.
2. :func:`decide` — given that, the method, whether the body can be replayed, and whether
   this was already the replay: pass the response through, refresh and replay once, or
   refresh only (a streamed body cannot be sent twice; the *next* call gets a good token).

Never twice: a replayed request is never replayed again, whatever it answers.

Salesforce facts used (shared/SALESFORCE.md): REST errors are a JSON array of
``{"message", "errorCode"}``; ``401 INVALID_SESSION_ID "Session expired or invalid"`` is
recoverable by a refresh, the ``"... not valid for use with the REST API"`` variant is not;
identity and ``/services/oauth2/*`` endpoints answer ``403`` with the plain-text body
``Bad_OAuth_Token``; maintenance fails writes with
``INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE`` (its status is uncertain, so any
4xx/5xx carrying that code counts).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "PEEK_BYTES",
    "WRITE_METHODS",
    "Action",
    "Finding",
    "Kind",
    "decide",
    "inspect_response",
    "is_write",
    "needs_body",
]

PEEK_BYTES = 16_384
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})

_MAINTENANCE_CODE = "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
_NOT_FOR_REST = "not valid for use with the rest api"


class Kind(enum.Enum):
    """What an upstream response means to the proxy."""

    OK = "ok"  # nothing to act on (success, or an error that is the client's business)
    SESSION_INVALID = "session_invalid"  # a refresh may fix it
    SESSION_UNUSABLE = "session_unusable"  # INVALID_SESSION_ID that a refresh does not fix
    WRONG_INSTANCE = "wrong_instance"  # URL_NOT_RESET: the call reached the wrong host
    MAINTENANCE = "maintenance"  # the org refuses writes
    LIMITED = "limited"  # REQUEST_LIMIT_EXCEEDED or 503: passes through with Retry-After


@dataclass(frozen=True, slots=True)
class Finding:
    """The reading of one response: its kind, and the evidence (never a secret)."""

    kind: Kind
    status: int
    error_code: str | None = None
    message: str | None = None

    @property
    def cause(self) -> str | None:
        """The cause word this finding alone supports, if any."""
        if self.kind is Kind.MAINTENANCE:
            return "maintenance"
        if self.kind is Kind.WRONG_INSTANCE:
            return "wrong_instance"
        return None

    def evidence(self) -> dict[str, object]:
        """A small dict for logs and :meth:`TokenSource.report_cause`."""
        return {"status": self.status, "error_code": self.error_code, "message": self.message}


class Action(enum.Enum):
    """What the proxy does with a response."""

    PASS = "pass"
    REFRESH_AND_REPLAY = "refresh_and_replay"
    REFRESH_ONLY = "refresh_only"


def is_write(method: str) -> bool:
    """POST, PATCH, PUT and DELETE are writes (the ones maintenance refuses)."""
    return method.upper() in WRITE_METHODS


def needs_body(status: int, method: str) -> bool:
    """True when :func:`inspect_response` needs the body's first bytes for this status."""
    if status in (401, 403):
        return True
    # Maintenance (any error status on a write), URL_NOT_RESET (400).
    return status >= 400 and (is_write(method) or status == 400)


def _errors(body: bytes) -> Iterable[tuple[str | None, str | None]]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return []
    items = data if isinstance(data, list) else [data]
    out = []
    for item in items:
        if isinstance(item, dict):
            code, msg = item.get("errorCode"), item.get("message")
            out.append(
                (code if isinstance(code, str) else None, msg if isinstance(msg, str) else None)
            )
    return out


def inspect_response(status: int, body_head: bytes) -> Finding:
    """Read one upstream response (status and the first bytes of its body)."""
    if status < 400:
        return Finding(Kind.OK, status)
    if status == 403 and body_head.strip() == b"Bad_OAuth_Token":
        return Finding(Kind.SESSION_INVALID, status, "Bad_OAuth_Token", None)
    for code, message in _errors(body_head):
        if code == "INVALID_SESSION_ID" and status == 401:
            if message and _NOT_FOR_REST in message.lower():
                return Finding(Kind.SESSION_UNUSABLE, status, code, message)
            return Finding(Kind.SESSION_INVALID, status, code, message)
        if code == _MAINTENANCE_CODE:
            return Finding(Kind.MAINTENANCE, status, code, message)
        if code == "URL_NOT_RESET":
            return Finding(Kind.WRONG_INSTANCE, status, code, message)
        if code == "REQUEST_LIMIT_EXCEEDED":
            return Finding(Kind.LIMITED, status, code, message)
    if status == 503:
        return Finding(Kind.LIMITED, status)
    return Finding(Kind.OK, status)


def decide(finding: Finding, *, replayable: bool, replayed: bool) -> Action:
    """Refresh-and-replay once for a dead session; otherwise pass the response through.

    ``replayed`` is True for the response to the replay itself: it always passes (never a
    refresh loop). A body that was streamed cannot be replayed: the token is still refreshed
    so the client's own retry succeeds.
    """
    if finding.kind is not Kind.SESSION_INVALID or replayed:
        return Action.PASS
    return Action.REFRESH_AND_REPLAY if replayable else Action.REFRESH_ONLY
