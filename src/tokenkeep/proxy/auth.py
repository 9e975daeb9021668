"""The proxy's API-key check: a synchronous hit, an await only on a miss.

:class:`ApiKeyCheck` is what :class:`~tokenkeep.proxy.app.ProxyApp` asks. A gateway passes
:class:`StoreKeyCheck` (:mod:`tokenkeep.proxy.wiring`): the hit is the store's own
in-process cache (:mod:`tokenkeep.store.api_key_cache`), which the control API shares and a
background recheck keeps honest, so a revoked key is refused by the proxy within
``TOKENKEEP_API_KEY_RECHECK_SECONDS`` like everywhere else. A bare ``authenticate``
coroutine (a proxy without a gateway, e.g. in tests) gets :class:`CallbackKeyCheck`: a
short positive cache of its own, with nothing to tell it about revocations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tokenkeep.clock import Clock
from tokenkeep.errors import TokenkeepError

if TYPE_CHECKING:
    from tokenkeep.runtime import Gateway

__all__ = ["ApiKeyCheck", "CallbackKeyCheck", "StoreKeyCheck"]

_CACHE_MAX = 4096


@runtime_checkable
class ApiKeyCheck(Protocol):
    """How the proxy checks a client's API key."""

    def cached(self, key: str) -> bool:
        """True when ``key`` is known good right now (synchronous, no I/O)."""

    async def verify(self, key: str) -> bool:
        """The full check on a cache miss."""


class CallbackKeyCheck:
    """A positive cache of ``seconds`` in front of an ``authenticate`` coroutine."""

    def __init__(
        self, authenticate: Callable[[str], Awaitable[bool]], clock: Clock, seconds: float
    ) -> None:
        self._authenticate = authenticate
        self._clock = clock
        self._seconds = seconds
        self._cache: dict[bytes, float] = {}  # SHA-256 of the key -> trusted until

    def cached(self, key: str) -> bool:
        expiry = self._cache.get(hashlib.sha256(key.encode()).digest())
        return expiry is not None and expiry > self._clock.monotonic()

    async def verify(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode()).digest()
        now = self._clock.monotonic()
        if not await self._authenticate(key):
            self._cache.pop(digest, None)
            return False
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = now + self._seconds
        return True


class StoreKeyCheck:
    """The gateway's API keys (``gateway.store.api_keys``), once the gateway runs."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def cached(self, key: str) -> bool:
        try:
            keys = self._gateway.store.api_keys
        except TokenkeepError:  # not started: verify answers not_ready
            return False
        return keys.cached(key) is not None

    async def verify(self, key: str) -> bool:
        return await self._gateway.store.api_keys.verify(key) is not None
