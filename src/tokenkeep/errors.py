"""One error hierarchy; each error carries the stable ``code`` word of shared/DESIGN.md.

Third-party exceptions are mapped to these once, at the edge (HTTP, database, upstream).
The control API renders every one as ``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
    """The connection's grant is gone: a human must reconnect it."""

    code = "needs_reauth"
    status_code = 409


class ActionRequiredError(TokenkeepError):
    """An org admin must change a setting (IP lock, API Client Control, app access)."""

    code = "action_required"
    status_code = 424


class TransientUpstreamError(TokenkeepError):
    """The provider failed in a way that is worth retrying later."""

    code = "upstream_unavailable"
    status_code = 503


class OrgWritePausedError(TokenkeepError):
    code = "org_write_paused"
    status_code = 503
