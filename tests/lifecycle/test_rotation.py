"""Rotating refresh tokens: 200 refresh cycles under concurrent use never replay an old one."""

from __future__ import annotations

import asyncio

import httpx
from lifecycle_support import Rig, connect

CYCLES = 200


async def test_200_rotations_under_concurrent_use_keep_the_connection_usable(rig: Rig) -> None:
    rig.emu.admin.patch_app(rig.emu.app_config.client_id, {"rotate_refresh_tokens": True})
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    # Two "processes" on one database (polling the row a little faster than the default).
    workers = [rig.coordinator, rig.new_coordinator(poll_interval=0.005)]
    fingerprints = set()
    for cycle in range(CYCLES):
        stale = await workers[0].token_for("c1")
        rig.advance(7300)
        if cycle % 2:
            # Half the cycles: the proxy's path (a rejected token), from both workers.
            calls = [w.refresh_after_rejection("c1", stale.version) for w in workers] * 3
        else:
            calls = [w.fresh_token("c1") for w in workers] * 3
        tokens = await asyncio.gather(*calls)
        assert len({t.access_token.reveal() for t in tokens}) == 1, cycle
        stored = await rig.store.connections.get("c1")
        fingerprints.add(stored.refresh_token_fingerprint)
    assert rig.refresh_grants() == CYCLES
    assert len(fingerprints) == CYCLES  # rotated every time, each new one stored
    final = await rig.coordinator.fresh_token("c1")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(
            final.instance_url + "/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {final.access_token.reveal()}"},
        )
    assert r.status_code == 200
    stored = await rig.store.connections.get("c1")
    assert stored.status == "active"
    assert stored.version == CYCLES + 1
