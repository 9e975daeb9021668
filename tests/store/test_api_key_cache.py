"""The verified API-key cache and its recheck (src/tokenkeep/store/api_key_cache.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from tokenkeep.clock import ManualClock
from tokenkeep.store import Store
from tokenkeep.store.api_key_cache import TRUST_SECONDS, VerifiedKeyCache
from tokenkeep.store.api_keys import hash_api_key
from tokenkeep.store.records import ApiKey

KEY = ApiKey(
    id="key_1",
    name="app",
    prefix="tk_abcdefg",
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    last_used_at=None,
    revoked_at=None,
)


async def _all_valid(digests: Sequence[str]) -> set[str]:
    return set(digests)


async def _none_valid(digests: Sequence[str]) -> set[str]:
    return set()


async def test_nothing_is_trusted_before_a_first_recheck() -> None:
    cache = VerifiedKeyCache(ManualClock())
    cache.put("d", KEY, cache.ticket())
    assert cache.get("d") is None  # no recheck running: every look-up asks the database
    await cache.recheck(_all_valid)
    assert cache.get("d") == KEY


async def test_a_recheck_drops_what_the_database_no_longer_holds() -> None:
    cache = VerifiedKeyCache(ManualClock())
    await cache.recheck(_all_valid)
    cache.put("d", KEY, cache.ticket())
    assert await cache.recheck(_none_valid) == 1
    assert cache.get("d") is None


async def test_hits_stop_when_rechecks_stop_succeeding() -> None:
    clock = ManualClock()
    cache = VerifiedKeyCache(clock)
    await cache.recheck(_all_valid)
    cache.put("d", KEY, cache.ticket())
    clock.advance(TRUST_SECONDS - 1)
    assert cache.get("d") == KEY
    clock.advance(2)
    assert cache.get("d") is None


async def test_a_key_read_while_a_recheck_ran_is_not_cached() -> None:
    cache = VerifiedKeyCache(ManualClock())
    await cache.recheck(_all_valid)
    ticket = cache.ticket()  # a verify starts its read ...
    await cache.recheck(_all_valid)  # ... a recheck begins (and ends) meanwhile ...
    cache.put("d", KEY, ticket)  # ... so what the verify read may be stale
    assert cache.get("d") is None

    release = asyncio.Event()

    async def slow(digests: Sequence[str]) -> set[str]:
        await release.wait()
        return set(digests)

    cache.put("other", KEY, cache.ticket())  # something for the recheck to ask about
    running = asyncio.create_task(cache.recheck(slow))
    await asyncio.sleep(0)
    assert cache.ticket() is None  # a recheck is reading right now
    release.set()
    await running
    cache.put("d", KEY, cache.ticket())
    assert cache.get("d") == KEY


async def test_still_valid_is_the_live_subset(store: Store) -> None:
    live = await store.api_keys.create("live")
    gone = await store.api_keys.create("gone")
    await store.api_keys.revoke(gone.key.id)
    digests = [hash_api_key(live.secret.reveal()), hash_api_key(gone.secret.reveal()), "0" * 64]
    assert await store.api_keys.still_valid(digests) == {digests[0]}
