"""The coordinator's in-process state, owned by one object per concern.

:class:`ConnectionCache` keeps, per connection: the decrypted token tagged with the row
``version`` it was read at, when that row was last seen unchanged, and the tokens the
proxy saw rejected (until the replay's outcome says whether they had expired). The proxy
must not read the database on every call (DESIGN.md, "Time, caches and addresses"):

* a cached token is served without any read while its row was confirmed within
  ``revalidate_seconds`` (5 s by default); after that, one cheap read of (version, status)
  confirms it or drops it — another process may have refreshed, revoked or deleted it;
* a rejected token is never trusted from the cache: the coordinator re-reads the row, and
  a newer version means another process refreshed (no refresh then);
* :meth:`ConnectionCache.forget` drops everything about a connection at once (deleted,
  re-connected, marked needs_reauth / action_required).

:class:`TtlCache` holds what every refresh reads but rarely changes (an integration, an
org's learned timeout) for a few seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from tokenkeep.lifecycle.policy import lives_for
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.store import Connection

__all__ = ["ConnectionCache", "Rejection", "TtlCache"]

V = TypeVar("V")
_REJECTED_MAX = 4096  # rejected tokens remembered until their replay's outcome is known


@dataclass(frozen=True, slots=True)
class Rejection:
    """A token the proxy saw refused: the row as it was, and when (our clock)."""

    connection: Connection
    at: float


class ConnectionCache:
    """Tokens, row confirmations and pending rejections, per connection."""

    def __init__(self, *, revalidate_seconds: float, monotonic: Callable[[], float]) -> None:
        self.revalidate_seconds = revalidate_seconds
        self._monotonic = monotonic
        self._tokens: dict[str, FreshToken] = {}
        self._checked: dict[str, float] = {}  # when each row was last seen unchanged
        self._rejected: dict[tuple[str, int], Rejection] = {}
        # The newest version Salesforce refused, per connection: never handed out again.
        self._refused: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, connection_id: str) -> FreshToken | None:
        """The cached token, if any (possibly expired or unconfirmed)."""
        return self._tokens.get(connection_id)

    def servable(self, connection_id: str, min_ttl: float, now: float) -> FreshToken | None:
        """The cached token if it lives ``min_ttl`` more AND its row was confirmed within
        ``revalidate_seconds``: servable without any read. Synchronous and allocation-free:
        the proxy's hot path."""
        token = self._tokens.get(connection_id)
        if token is None or not lives_for(token.expires_epoch, min_ttl, now):
            return None
        if self._refused and self._refused.get(connection_id) == token.version:
            return None
        checked = self._checked.get(connection_id)
        if checked is None or self._monotonic() - checked >= self.revalidate_seconds:
            return None
        return token

    def put(self, token: FreshToken) -> FreshToken:
        """Remember ``token`` (row just read or written: confirmed now) unless a newer
        version is cached; returns what is cached."""
        with self._lock:
            current = self._tokens.get(token.connection_id)
            if current is not None and current.version > token.version:
                return current
            self._tokens[token.connection_id] = token
            self._checked[token.connection_id] = self._monotonic()
            return token

    def confirm(self, connection_id: str) -> None:
        """The row behind the cached token was just seen unchanged."""
        self._checked[connection_id] = self._monotonic()

    def forget(self, connection_id: str) -> None:
        """Drop the connection's token and confirmation."""
        with self._lock:
            self._tokens.pop(connection_id, None)
            self._checked.pop(connection_id, None)
            self._refused.pop(connection_id, None)

    def refused_version(self, connection_id: str) -> int | None:
        """The newest row version whose token Salesforce refused (never served again: a
        caller needs a newer one, and while the refresh backs off it answers 503)."""
        return self._refused.get(connection_id)

    def remember_rejection(self, conn: Connection, at: float) -> None:
        """The token of ``conn.version`` was refused at ``at`` (kept until its outcome)."""
        if self._refused.get(conn.id, 0) < conn.version:
            if len(self._refused) >= _REJECTED_MAX:
                self._refused.pop(next(iter(self._refused)))
            self._refused[conn.id] = conn.version
        key = (conn.id, conn.version)
        if key in self._rejected:
            return
        if len(self._rejected) >= _REJECTED_MAX:
            self._rejected.pop(next(iter(self._rejected)))  # oldest first: bounded
        self._rejected[key] = Rejection(conn, at)

    def take_rejection(self, connection_id: str, version: int) -> Rejection | None:
        """The pending rejection of ``version``, removed (once per rejected token)."""
        return self._rejected.pop((connection_id, version), None)

    def __len__(self) -> int:
        return len(self._tokens)


class TtlCache(Generic[V]):
    """Values kept for ``seconds`` of monotonic time (then read again)."""

    def __init__(self, seconds: float, monotonic: Callable[[], float]) -> None:
        self._seconds = seconds
        self._monotonic = monotonic
        self._values: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> tuple[bool, V | None]:
        """``(True, value)`` while fresh, else ``(False, None)``."""
        entry = self._values.get(key)
        if entry is not None and self._monotonic() - entry[0] < self._seconds:
            return True, entry[1]
        return False, None

    def put(self, key: str, value: V) -> V:
        """Remember ``value`` from now."""
        self._values[key] = (self._monotonic(), value)
        return value
