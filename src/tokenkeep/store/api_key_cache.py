"""This process's positive cache of verified API keys, re-checked against the database.

One cache per process serves both the control API (``require_api_key``) and the proxy
(whose hit is a synchronous dict look-up: no coroutine, no I/O). A revocation must take
effect everywhere within a second, in every worker of every gateway on the database, so a
hit is not trusted for long on its own: :class:`ApiKeyRecheck` (a background task, every
``TOKENKEEP_API_KEY_RECHECK_SECONDS``, 0.5 s) asks the database which of the cached keys
still exist un-revoked -- one indexed read (``key_hash IN (...)``, the unique index) -- and
drops the others. A revoke, a delete, a replaced ``TOKENKEEP_SECRET_KEY`` or a hand-edited
row are all seen the same way, with no schema change and no per-request read.

Why not a revocation counter: it would need a migration (and a bump in every code path
that can invalidate a key, including ``DELETE`` by hand); asking about the keys actually
cached answers the exact question, and costs one small read per interval (none while the
cache is empty).

Two guards keep the bound honest:

* a key read from the database while a recheck was in flight (or after its read began) is
  answered but not cached (:meth:`VerifiedKeyCache.ticket`): the recheck may have missed a
  revocation that landed between the two reads;
* a hit is trusted only while rechecks succeed: without a successful one for
  :data:`TRUST_SECONDS` (the database away, or no recheck running at all) every look-up
  goes to the database again. That is also the most a key revoked during a database outage
  of this gateway alone can outlive its revocation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from tokenkeep.clock import Clock
from tokenkeep.observability.logging import get_logger
from tokenkeep.periodic import Periodic
from tokenkeep.store.records import ApiKey

__all__ = ["TRUST_SECONDS", "ApiKeyRecheck", "VerifiedKeyCache"]

_log = get_logger("tokenkeep.store.api_keys")

#: How long cached keys stay trusted after the last successful recheck.
TRUST_SECONDS = 30.0
_MAX_ENTRIES = 4096

#: ``still_valid(digests)``: the subset of ``digests`` that are live keys in the database.
StillValid = Callable[[Sequence[str]], Awaitable[set[str]]]


@dataclass(frozen=True, slots=True)
class _Entry:
    key: ApiKey
    cached_at: float


class VerifiedKeyCache:
    """Hex SHA-256 of a key → the verified key (see the module docstring)."""

    def __init__(self, clock: Clock, *, trust_seconds: float = TRUST_SECONDS) -> None:
        self._clock = clock
        self._trust_seconds = trust_seconds
        self._entries: dict[str, _Entry] = {}
        self._epoch = 0  # bumped when a recheck begins its read
        self._rechecking = False
        self._trusted_until = float("-inf")  # no hit before the first successful recheck

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> ApiKey | None:
        """The cached key, if trusted now (synchronous, O(1): the hot path)."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        now = self._clock.monotonic()
        if now >= self._trusted_until or now - entry.cached_at >= self._trust_seconds:
            return None
        return entry.key

    def ticket(self) -> int | None:
        """Taken before reading a key from the database; ``None``: do not cache what you
        read (a recheck is reading right now)."""
        return None if self._rechecking else self._epoch

    def put(self, digest: str, key: ApiKey, ticket: int | None) -> None:
        """Cache ``key`` unless a recheck began since ``ticket`` was taken."""
        if ticket is None or ticket != self._epoch or self._rechecking:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = _Entry(key, self._clock.monotonic())

    def discard(self, digest: str) -> None:
        """Forget one key (this process revoked or deleted it: refused at once here); a
        verify reading the database at this moment does not cache what it read."""
        self._epoch += 1
        self._entries.pop(digest, None)

    def clear(self) -> None:
        self._entries.clear()

    async def recheck(self, still_valid: StillValid) -> int:
        """Drop every cached key the database no longer holds live; the number dropped.

        Raises what ``still_valid`` raises (the entries are then no longer trusted once
        :data:`TRUST_SECONDS` have passed since the last success).
        """
        self._epoch += 1
        self._rechecking = True
        try:
            digests = list(self._entries)
            valid = await still_valid(digests) if digests else set()
        finally:
            self._rechecking = False
        gone = [d for d in digests if d not in valid]
        for digest in gone:
            self._entries.pop(digest, None)
        self._trusted_until = self._clock.monotonic() + self._trust_seconds
        return len(gone)


class ApiKeyRecheck:
    """The background task that keeps a :class:`VerifiedKeyCache` honest (a gateway
    service: one recheck at start, then one every ``interval`` seconds)."""

    def __init__(self, cache: VerifiedKeyCache, still_valid: StillValid, interval: float) -> None:
        self._cache = cache
        self._still_valid = still_valid
        self._poll = Periodic("api-key-recheck", interval, self.recheck)

    async def recheck(self) -> int:
        dropped = await self._cache.recheck(self._still_valid)
        if dropped:
            _log.info("api_keys.revoked_seen", dropped=dropped)
        return dropped

    async def start(self) -> None:
        try:
            await self.recheck()
        except Exception as exc:  # the database away: the poll tries again
            _log.warning("api_keys.recheck_failed", error=repr(exc))
        self._poll.start()

    async def stop(self) -> None:
        await self._poll.stop()
