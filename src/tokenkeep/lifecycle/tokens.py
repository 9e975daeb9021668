"""What the coordinator hands out: :class:`FreshToken`, the one token type of the gateway.

The proxy, the control API (``GET /connections/{id}/token``) and the scheduler all receive
this type; it is defined here, below the proxy, and imported downward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tokenkeep.lifecycle.policy import lives_for
from tokenkeep.secret import Secret

__all__ = ["FreshToken"]


@dataclass(frozen=True, slots=True)
class FreshToken:
    """A usable access token for one connection and the row version it belongs to.

    ``version`` is the fencing tag: the proxy hands it back to
    ``refresh_after_rejection`` so a token that another caller (or process) has already
    replaced is not refreshed twice. ``expires_at`` is our own estimate (introspection,
    configured or learned timeout), anchored on our clock; ``None`` when nothing is known.
    """

    connection_id: str
    org_id: str | None
    instance_url: str
    access_token: Secret
    version: int
    expires_at: datetime | None = None
    issued_to_address: str | None = None
    #: The connection's integration (org health counts calls per org and integration).
    integration_key: str | None = None
    #: The Salesforce user the session belongs to (the operation log names it).
    user_id: str | None = None
    #: ``expires_at`` as epoch seconds, computed once (the proxy's hot path compares it).
    expires_epoch: float | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        epoch = self.expires_at.timestamp() if self.expires_at is not None else None
        object.__setattr__(self, "expires_epoch", epoch)

    def ttl(self, now: float) -> float | None:
        """Seconds left at ``now`` (epoch seconds), or None when the expiry is unknown."""
        if self.expires_epoch is None:
            return None
        return self.expires_epoch - now

    def valid_for(self, seconds: float, now: float) -> bool:
        """True when the token is known to live at least ``seconds`` more."""
        return lives_for(self.expires_epoch, seconds, now)
