"""What a provider answers, as neutral values: tokens, introspection, identity.

The provider modules (:mod:`tokenkeep.providers.salesforce`) build these from wire answers;
the OAuth layer, the lifecycle and the API consume them (``tokenkeep.oauth`` re-exports
them). All frozen dataclasses. Secrets are :class:`~tokenkeep.secret.Secret`, so ``repr``
never shows a token; ``raw`` maps keep the provider's *non-secret* fields only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenkeep.secret import Secret

__all__ = ["Identity", "Introspection", "TokenResponse"]


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
