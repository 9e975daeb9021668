"""What the coordinator hands out (:class:`FreshToken`) and its in-process cache.

The proxy must not read the database on every call (DESIGN.md, "Time, caches and
addresses"): :class:`TokenCache` keeps the decrypted token per connection, tagged with the
row ``version`` it was read at. A rejected token is never trusted from the cache: the
coordinator re-reads the row first, and a newer version means another process refreshed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from tokenkeep.secret import Secret

__all__ = ["FreshToken", "TokenCache"]


@dataclass(frozen=True, slots=True)
class FreshToken:
    """A usable access token for one connection and the row version it belongs to.

    ``expires_at`` is our own estimate (introspection, configured or learned timeout),
    anchored on our clock; ``None`` when nothing is known yet.
    """

    connection_id: str
    org_id: str | None
    instance_url: str
    access_token: Secret
    version: int
    expires_at: datetime | None = None
    issued_to_address: str | None = None
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
        ttl = self.ttl(now)
        return ttl is not None and ttl >= seconds


class TokenCache:
    """Decrypted tokens per connection; a put never replaces a newer version with an older."""

    def __init__(self) -> None:
        self._tokens: dict[str, FreshToken] = {}
        self._lock = threading.Lock()

    def get(self, connection_id: str) -> FreshToken | None:
        """The cached token, if any (possibly expired: callers check ``valid_for``)."""
        return self._tokens.get(connection_id)

    def put(self, token: FreshToken) -> FreshToken:
        """Remember ``token`` unless a newer version is cached; returns what is cached."""
        with self._lock:
            current = self._tokens.get(token.connection_id)
            if current is not None and current.version > token.version:
                return current
            self._tokens[token.connection_id] = token
            return token

    def drop(self, connection_id: str) -> None:
        """Forget a connection (revoked, deleted, or its status changed)."""
        with self._lock:
            self._tokens.pop(connection_id, None)

    def __len__(self) -> int:
        return len(self._tokens)
