"""One error hierarchy; each error carries the stable ``code`` word of shared/DESIGN.md.

Third-party exceptions are mapped to these once, at the edge (HTTP, database, upstream).
The control API renders every one as ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tokenkeep.vocabulary import Cause, Reason

__all__ = [
    "ActionRequiredError",
    "ConfigError",
    "ConflictError",
    "DatabaseUnavailableError",
    "EncryptionKeyError",
    "NeedsReauthError",
    "NotFoundError",
    "OrgWritePausedError",
    "PayloadTooLargeError",
    "TokenkeepError",
    "TransientUpstreamError",
    "UnauthorizedError",
    "ValidationError",
]


class TokenkeepError(Exception):
    """Base of every error tokenkeep raises on purpose."""

    code: ClassVar[str] = "internal_error"
    status_code: ClassVar[int] = 500
    #: The cause word a failed proxied call is labelled with (``Tokenkeep-Cause``), if any.
    cause: Cause | None = None

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ConfigError(TokenkeepError):
    """A setting is missing or invalid; start-up stops with one sentence naming it."""

    code = "config_error"


class EncryptionKeyError(ConfigError):
    """The keyring cannot read data that is stored (missing or wrong key)."""

    code = "encryption_key_error"


class ValidationError(TokenkeepError):
    code = "validation_error"
    status_code = 422


class UnauthorizedError(TokenkeepError):
    code = "unauthorized"
    status_code = 401


class NotFoundError(TokenkeepError):
    code = "not_found"
    status_code = 404


class ConflictError(TokenkeepError):
    code = "conflict"
    status_code = 409


class PayloadTooLargeError(TokenkeepError):
    code = "payload_too_large"
    status_code = 413


class DatabaseUnavailableError(TokenkeepError):
    code = "database_unavailable"
    status_code = 503


class NeedsReauthError(TokenkeepError):
    """The connection's grant is gone: a human must reconnect it.

    ``reason`` is the stored ``status_reason`` (``revoked:inactive_user``, ...).
    """

    code = "needs_reauth"
    status_code = 409
    cause = Cause.REVOKED

    def __init__(
        self, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.reason = Reason.parse(reason)


class ActionRequiredError(TokenkeepError):
    """An org admin must change a setting (IP lock, API Client Control, app access).

    ``reason`` is the stored ``status_reason`` (``ip_locked:login_ip_restricted``, ...);
    :attr:`cause` is its cause word, or ``unknown`` when it names none
    (``misconfigured:...``). Without a reason, ``details["cause"]`` is read.
    """

    code = "action_required"
    status_code = 424

    def __init__(
        self, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.reason = Reason.parse(reason or self.details.get("cause"))
        named = self.reason.cause if self.reason is not None else None
        self.cause = named or Cause.UNKNOWN


class TransientUpstreamError(TokenkeepError):
    """The provider failed in a way that is worth retrying later.

    ``retry_at`` (epoch seconds, our clock) is when a retry may succeed, when known.
    """

    code = "upstream_unavailable"
    status_code = 503

    def __init__(
        self,
        message: str,
        *,
        retry_at: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_at = retry_at


class OrgWritePausedError(TokenkeepError):
    """Salesforce refuses this org's writes (maintenance): they are paused for a while.

    ``retry_after`` is the number of seconds until the next write is let through.
    """

    code = "org_write_paused"
    status_code = 503
    cause = Cause.MAINTENANCE

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after
