"""The OAuth layer's values: the app (:class:`OAuthApp`), and what the provider answers.

:class:`TokenResponse`, :class:`Introspection` and :class:`Identity` are defined with the
provider parsers that build them (:mod:`tokenkeep.providers.models`) and re-exported here.
All frozen dataclasses; secrets are :class:`~tokenkeep.secret.Secret`, so ``repr`` of any
of these never shows a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenkeep.errors import ValidationError
from tokenkeep.providers.models import Identity, Introspection, TokenResponse
from tokenkeep.secret import Secret
from tokenkeep.vocabulary import AUTH_MODES, AuthMode

if TYPE_CHECKING:  # a type only: the OAuth values do not load the store at run time
    from tokenkeep.store.records import Integration

__all__ = [
    "AuthMode",
    "Identity",
    "Introspection",
    "OAuthApp",
    "TokenResponse",
    "oauth_app_for",
]

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
    auth_mode: AuthMode = AuthMode.OAUTH2
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
        try:
            # A plain word (from storage or a caller) becomes the enum member.
            object.__setattr__(self, "auth_mode", AuthMode(self.auth_mode))
        except ValueError:
            raise ValidationError(
                f"auth_mode must be one of {', '.join(AUTH_MODES)} (got {self.auth_mode!r})"
            ) from None
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


def oauth_app_for(integration: Integration) -> OAuthApp:
    """The token-endpoint view of an integration read ``with_secrets=True``."""
    secrets_ = integration.secrets
    return OAuthApp(
        client_id=integration.client_id,
        login_url=integration.login_url,
        client_secret=secrets_.client_secret if secrets_ else None,
        scopes=tuple(integration.scopes),
        auth_mode=AuthMode(integration.auth_mode),
        private_key=secrets_.private_key if secrets_ else None,
        username=integration.username,
        session_timeout_seconds=integration.session_timeout_seconds,
        provider=integration.provider,
    )
