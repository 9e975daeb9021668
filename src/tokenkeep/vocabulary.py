"""The contract words of shared/DESIGN.md, defined once.

Every module that names a cause, a connection status, an event type or an auth mode
imports it from here. The members are :class:`enum.StrEnum`, so they compare equal to,
serialise as and format as the plain words users, logs and the database see.

A connection's ``status_reason`` is ``cause[:detail]`` (``revoked:inactive_user``,
``ip_locked:login_ip_restricted``, ``misconfigured:signature_mismatch``): :class:`Reason`
reads and writes that form, so nobody splits on ``":"`` by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AUTH_MODES",
    "CAUSE_WORDS",
    "CONNECTION_STATUSES",
    "WRITE_METHODS",
    "AuthMode",
    "Cause",
    "EventType",
    "Reason",
    "Status",
    "is_write",
]


class Cause(StrEnum):
    """Why a Salesforce call failed for good (diagnosis and the operation log)."""

    EXPIRED = "expired"
    WRONG_INSTANCE = "wrong_instance"
    IP_LOCKED = "ip_locked"
    API_CLIENT_CONTROL = "api_client_control"
    REVOKED = "revoked"
    MAINTENANCE = "maintenance"
    UNKNOWN = "unknown"


#: The six named causes (``unknown`` is not one of them).
CAUSE_WORDS: frozenset[str] = frozenset(c.value for c in Cause if c is not Cause.UNKNOWN)


class Status(StrEnum):
    """A connection's status."""

    ACTIVE = "active"  # usable
    NEEDS_REAUTH = "needs_reauth"  # the grant is gone: the user must reconnect
    ACTION_REQUIRED = "action_required"  # an org admin must change a setting
    ERROR = "error"  # transient failures, retrying with backoff


CONNECTION_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


class EventType(StrEnum):
    """Webhook event types (the outbox's ``event_type``)."""

    CONNECTION_CREATED = "connection.created"
    CONNECTION_NEEDS_REAUTH = "connection.needs_reauth"
    CONNECTION_ACTION_REQUIRED = "connection.action_required"
    CONNECTION_REFRESH_FAILED = "connection.refresh_failed"
    CONNECTION_RECOVERED = "connection.recovered"
    CONNECTION_INSTANCE_MOVED = "connection.instance_moved"
    ORG_MAINTENANCE_STARTED = "org.maintenance_started"
    ORG_MAINTENANCE_ENDED = "org.maintenance_ended"
    ORG_SESSION_ERROR_SPIKE = "org.session_error_spike"


class AuthMode(StrEnum):
    """How an integration obtains tokens."""

    OAUTH2 = "oauth2"  # authorization code + refresh token
    JWT_BEARER = "jwt_bearer"  # a signed assertion per token, no refresh token
    CLIENT_CREDENTIALS = "client_credentials"  # the app's own identity (My Domain only)


AUTH_MODES: tuple[str, ...] = tuple(m.value for m in AuthMode)

#: The HTTP methods that write (the ones Salesforce maintenance refuses).
WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


def is_write(method: str) -> bool:
    """POST, PATCH, PUT and DELETE are writes (the ones maintenance refuses)."""
    return method.upper() in WRITE_METHODS


_REASON_MAX = 50  # the width of connections.status_reason


@dataclass(frozen=True, slots=True)
class Reason:
    """A stored ``status_reason``: a leading word and an optional detail.

    The word is a :class:`Cause` where one applies (``revoked``, ``ip_locked``, ...) or a
    word of its own (``misconfigured``, ``no_refresh_token``, ``token_error``).
    """

    word: str
    detail: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> Reason | None:
        """``"revoked:inactive_user"`` -> ``Reason("revoked", "inactive_user")``."""
        if not text:
            return None
        word, _, detail = text.partition(":")
        return cls(word, detail or None)

    @property
    def cause(self) -> Cause | None:
        """The cause word this reason names, if its word is one."""
        try:
            return Cause(self.word)
        except ValueError:
            return None

    def __str__(self) -> str:
        text = f"{self.word}:{self.detail}" if self.detail else self.word
        return text[:_REASON_MAX]
