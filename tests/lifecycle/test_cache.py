"""The coordinator's synchronous ``cached_token``: the proxy's cache hit without a coroutine.

It must answer exactly when ``token_for`` would answer from the cache without a read, and
otherwise say None so the proxy takes the awaited path (which re-checks the row).
"""

from __future__ import annotations

from lifecycle_support import Rig, connect

from tokenkeep.lifecycle.coordinator import PROXY_MIN_TTL


async def test_cached_token_only_within_the_recheck_window(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    proxy_process = rig.new_coordinator(revalidate_seconds=5)
    assert proxy_process.cached_token("c1") is None  # nothing cached yet
    first = await proxy_process.token_for("c1")
    hit = proxy_process.cached_token("c1")
    assert hit is not None
    assert (hit.version, hit.access_token.reveal()) == (first.version, first.access_token.reveal())
    # Revoked elsewhere: the cache answers within the window, as token_for does...
    await rig.store.connections.set_status("c1", "needs_reauth", reason="revoked")
    assert proxy_process.cached_token("c1") is not None
    # ...and not after it: the proxy must await token_for, which reads the row.
    rig.advance(6)
    assert proxy_process.cached_token("c1") is None


async def test_cached_token_not_served_close_to_expiry(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    proxy_process = rig.new_coordinator(revalidate_seconds=10**9)
    token = await proxy_process.token_for("c1")
    cached = proxy_process.cache.get("c1")
    assert cached is not None
    assert cached.expires_at is not None
    left = cached.expires_at.timestamp() - rig.clock.time()
    rig.advance(left - PROXY_MIN_TTL - 1)
    assert proxy_process.cached_token("c1") == token
    rig.advance(2)  # now under PROXY_MIN_TTL left: only the awaited path may answer
    assert proxy_process.cached_token("c1") is None
    assert (await proxy_process.token_for("c1")).version > token.version  # refreshed
    proxy_process.forget("c1")
    assert proxy_process.cached_token("c1") is None
