"""Values that flow through the OAuth layer: the app, and what the provider answers.

All frozen dataclasses. Secrets are :class:`~tokenkeep.secret.Secret`, so ``repr`` of any of
these never shows a token; ``raw`` maps keep the provider's *non-secret* fields only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from tokenkeep.errors import ValidationError
from tokenkeep.secret import Secret
from tokenkeep.store.records import Integration

__all__ = [
    "AuthMode",
    "Identity",
    "Introspection",
    "OAuthApp",
    "TokenResponse",
    "oauth_app_for",
]

AuthMode = Literal["oauth2", "jwt_bearer", "client_credentials"]
AUTH_MODES: tuple[str, ...] = get_args(AuthMode)

DEFAULT_SESSION_TIMEOUT_SECONDS = 7200


@dataclass(frozen=True, slots=True)
class OAuthApp:
    """One connected app as the token-endpoint client needs it (an integration's OAuth part).

    ``login_url`` is the host that serves ``/services/oauth2/*``: production
    (https://login.salesforce.com), sandbox (https://test.salesforce.com) or the org's
    My Domain. ``client_credentials`` only works on a My Domain URL.
    """

    client_id: str
    login_url: str
    client_secret: Secret | None = None
    scopes: tuple[str, ...] = ("api", "refresh_token")
    auth_mode: AuthMode = "oauth2"
    private_key: Secret | None = None
    username: str | None = None
    session_timeout_seconds: int = DEFAULT_SESSION_TIMEOUT_SECONDS
    provider: str = "salesforce"

    def __post_init__(self) -> None:
        # Normalise once here so URL joins elsewhere never produce "//services".
        object.__setattr__(self, "login_url", self.login_url.rstrip("/"))
        if isinstance(self.scopes, str):
            object.__setattr__(self, "scopes", tuple(self.scopes.split()))
        else:
            object.__setattr__(self, "scopes", tuple(self.scopes))
        if not self.client_id:
            raise ValidationError("an OAuth app needs a client_id")
        if not self.login_url.startswith(("https://", "http://")):
            raise ValidationError("login_url must be an http(s) URL")
        if self.auth_mode not in AUTH_MODES:
            raise ValidationError(
                f"auth_mode must be one of {', '.join(AUTH_MODES)} (got {self.auth_mode!r})"
            )
        if self.auth_mode == "jwt_bearer" and (not self.private_key or not self.username):
            raise ValidationError("auth_mode jwt_bearer needs private_key and username")
        if self.auth_mode == "client_credentials" and not self.client_secret:
            raise ValidationError("auth_mode client_credentials needs client_secret")
        if self.session_timeout_seconds <= 0:
            raise ValidationError("session_timeout_seconds must be positive")

    @property
    def refreshable_by_grant(self) -> bool:
        """True when a refresh token exists; JWT bearer and client credentials mint anew."""
        return self.auth_mode == "oauth2"


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """A successful token-endpoint answer, parsed.

    ``issued_at_ms`` is the provider's clock (epoch milliseconds) and is only ever used for
    the signature and for display; expiry is anchored on ``received_at`` (OUR clock, epoch
    seconds) -- the two clocks may differ by minutes or, in tests, by hours.
    """

    access_token: Secret
    instance_url: str
    received_at: float
    refresh_token: Secret | None = None
    id_url: str | None = None
    org_id: str | None = None
    user_id: str | None = None
    issued_at_ms: int | None = None
    signature: str | None = field(default=None, repr=False)
    signature_verified: bool = False
    # A signature was present and did NOT verify (kept, not raised, on a refresh answer).
    signature_mismatch: bool = False
    scope: str | None = None
    token_type: str = "Bearer"
    local_address: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The granted scopes as a tuple (empty when the provider did not say)."""
        return tuple(self.scope.split()) if self.scope else ()


@dataclass(frozen=True, slots=True)
class Introspection:
    """An ``active`` introspection answer. Times are the PROVIDER's epoch seconds.

    Only :attr:`lifetime_seconds` (a duration) should drive expiry: anchor it on our own
    clock, never compare ``exp`` with our time.
    """

    active: bool
    exp: int | None = None
    iat: int | None = None
    nbf: int | None = None
    scope: str | None = None
    client_id: str | None = None
    username: str | None = None
    sub: str | None = None
    token_type: str | None = None

    @property
    def lifetime_seconds(self) -> float | None:
        """``exp - iat``: how long the provider says the token lives, or None if unknown."""
        if self.exp is None or self.iat is None or self.exp <= self.iat:
            return None
        return float(self.exp - self.iat)


@dataclass(frozen=True, slots=True)
class Identity:
    """What the identity URL (or userinfo) says about the user and org behind a token."""

    user_id: str
    org_id: str
    username: str | None = None
    email: str | None = None
    display_name: str | None = None
    active: bool | None = None
    user_type: str | None = None
    urls: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def oauth_app_for(integration: Integration) -> OAuthApp:
    """The token-endpoint view of an integration read ``with_secrets=True``."""
    secrets_ = integration.secrets
    return OAuthApp(
        client_id=integration.client_id,
        login_url=integration.login_url,
        client_secret=secrets_.client_secret if secrets_ else None,
        scopes=tuple(integration.scopes),
        auth_mode=integration.auth_mode.value,
        private_key=secrets_.private_key if secrets_ else None,
        username=integration.username,
        session_timeout_seconds=integration.session_timeout_seconds,
        provider=integration.provider,
    )
