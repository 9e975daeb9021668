"""The one reader of Salesforce API answers: what a data-call response says. Pure and fast.

:func:`read_api_answer` takes the status and the first bytes of the body (the *head*, at
most :data:`HEAD_BYTES`; Salesforce's error bodies are tiny) and says whether the session
is dead (a refresh may fix it), dead for good, on the wrong host, refused by maintenance,
limited, or nothing of interest. The proxy calls it on every upstream error status; the
SDK's direct mode (``tokenkeep.client``) calls it on a 401/403. Successful answers cost one
comparison.

Salesforce facts used (shared/SALESFORCE.md):

* REST errors are a JSON array of ``{"message", "errorCode"}`` in any key order
  (:func:`~tokenkeep.providers.salesforce.parse_rest_errors`); the first entry with a code
  read here decides;
* ``401 INVALID_SESSION_ID "Session expired or invalid"`` is recoverable by a refresh; the
  ``"... not valid for use with the REST API"`` variant (API Access Control) is not. A
  401 without that code (HTML from a load balancer, an empty body) is not read as a dead
  session: refreshing on it would hide an outage behind a refresh storm;
* the identity URL and ``/services/oauth2/*`` answer ``403`` with the plain-text body
  ``Bad_OAuth_Token`` (the Mobile SDK refreshes on it);
* ``400 URL_NOT_RESET``: the call reached a host that is not the token's instance;
* maintenance fails writes with ``INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE``;
  its status is uncertain, so any 4xx/5xx carrying that code counts;
* ``REQUEST_LIMIT_EXCEEDED`` and a ``503`` are limits: retry later (``Retry-After``);
* ``API_DISABLED_FOR_ORG``: the org's edition or settings have no API; only an admin helps.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tokenkeep.providers.salesforce import parse_rest_errors
from tokenkeep.vocabulary import Cause

__all__ = [
    "HEAD_BYTES",
    "AnswerKind",
    "ApiAnswer",
    "Headers",
    "read_api_answer",
    "retry_after_seconds",
]

#: How much of a body the reader looks at; the proxy peeks exactly this much.
HEAD_BYTES = 16_384

MAINTENANCE_CODE = "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
_NOT_FOR_REST = "not valid for use with the rest api"

#: Response headers as a mapping, raw ASGI/aiohttp byte pairs, or str pairs.
Headers = Mapping[str, str] | Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]


class AnswerKind(enum.Enum):
    """What a Salesforce API answer means to the gateway."""

    OK = "ok"  # nothing to act on (success, or an error that is the client's business)
    SESSION_INVALID = "session_invalid"  # a refresh may fix it
    SESSION_UNUSABLE = "session_unusable"  # INVALID_SESSION_ID that a refresh does not fix
    WRONG_INSTANCE = "wrong_instance"  # URL_NOT_RESET: the call reached the wrong host
    MAINTENANCE = "maintenance"  # the org refuses writes
    LIMITED = "limited"  # REQUEST_LIMIT_EXCEEDED or 503: retry later
    API_DISABLED = "api_disabled"  # API_DISABLED_FOR_ORG: an admin must enable the API


_CAUSES = {
    AnswerKind.MAINTENANCE: Cause.MAINTENANCE,
    AnswerKind.WRONG_INSTANCE: Cause.WRONG_INSTANCE,
}
_TRANSIENT = frozenset({AnswerKind.MAINTENANCE, AnswerKind.LIMITED})
# The first entry carrying one of these codes decides (INVALID_SESSION_ID only on a 401).
_BY_CODE = {
    MAINTENANCE_CODE: AnswerKind.MAINTENANCE,
    "URL_NOT_RESET": AnswerKind.WRONG_INSTANCE,
    "REQUEST_LIMIT_EXCEEDED": AnswerKind.LIMITED,
}
_API_DISABLED = "API_DISABLED_FOR_ORG"


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    """The reading of one answer: its kind, and the evidence (never a secret).

    ``retry_after`` is the answer's ``Retry-After`` in seconds, read only for a transient
    answer and only when the caller passed the headers.
    """

    kind: AnswerKind
    status: int
    error_code: str | None = None
    message: str | None = None
    retry_after: float | None = None

    @property
    def cause(self) -> Cause | None:
        """The cause word this answer alone supports (``maintenance``, ``wrong_instance``).

        A dead session names no cause by itself: whether it had expired is known only
        after a refresh and a replay (``tokenkeep.proxy.outcome``).
        """
        return _CAUSES.get(self.kind)

    @property
    def refresh_may_help(self) -> bool:
        """True when refreshing the token and sending once more can fix it."""
        return self.kind is AnswerKind.SESSION_INVALID

    @property
    def transient(self) -> bool:
        """True when the org is temporarily unable: retry later, not now."""
        return self.kind in _TRANSIENT

    def evidence(self) -> dict[str, object]:
        """A small dict for logs and the cause report."""
        return {"status": self.status, "error_code": self.error_code, "message": self.message}


# Successful answers are read on every call: one shared, immutable value per status.
_OK: dict[int, ApiAnswer] = {}


def read_api_answer(status: int, body_head: bytes, headers: Headers | None = None) -> ApiAnswer:
    """Read one answer from its status and the first :data:`HEAD_BYTES` of its body.

    ``headers`` is optional: pass them to learn :attr:`ApiAnswer.retry_after`.
    """
    if status < 400:
        ok = _OK.get(status)
        if ok is None:
            ok = _OK[status] = ApiAnswer(AnswerKind.OK, status)
        return ok
    answer = _read_error(status, body_head[:HEAD_BYTES])
    if headers is not None and answer.kind in _TRANSIENT:
        seconds = retry_after_seconds(headers)
        if seconds is not None:
            answer = ApiAnswer(answer.kind, status, answer.error_code, answer.message, seconds)
    return answer


def _read_error(status: int, head: bytes) -> ApiAnswer:
    if status == 403 and head.strip() == b"Bad_OAuth_Token":
        return ApiAnswer(AnswerKind.SESSION_INVALID, status, "Bad_OAuth_Token")
    disabled: str | None = None
    first: str | None = None  # an errorCode that changes nothing, kept for the log
    for error in parse_rest_errors(head):
        code, message = error.error_code, error.message or None
        first = first or code
        if code == "INVALID_SESSION_ID" and status == 401:
            if message and _NOT_FOR_REST in message.lower():
                return ApiAnswer(AnswerKind.SESSION_UNUSABLE, status, code, message)
            return ApiAnswer(AnswerKind.SESSION_INVALID, status, code, message)
        kind = _BY_CODE.get(code)
        if kind is not None:
            return ApiAnswer(kind, status, code, message)
        if code == _API_DISABLED and disabled is None:
            disabled = message or ""
    if status == 503:
        return ApiAnswer(AnswerKind.LIMITED, status)
    if disabled is not None:
        # Last: it changes nothing the proxy does, so it never hides a code that does.
        return ApiAnswer(AnswerKind.API_DISABLED, status, _API_DISABLED, disabled or None)
    return ApiAnswer(AnswerKind.OK, status, first)


def retry_after_seconds(headers: Headers) -> float | None:
    """``Retry-After`` in seconds (case-insensitive name), or None.

    An HTTP-date value is ignored: comparing the provider's clock with ours is unsafe.
    """
    value = _header(headers, "retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    # "inf" and "nan" parse as floats: neither is a time to come back at.
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _header(headers: Headers, name: str) -> str | None:
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if key.lower() == name:
                return str(value)
        return None
    for key, value in headers:
        k = key.decode("latin-1") if isinstance(key, bytes) else key
        if k.lower() == name:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None
