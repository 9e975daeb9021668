"""The direct-mode token (``fresh_token``) across processes: a bounded staleness.

Two coordinators on one database stand for two gateway processes. Process B serves its
cached token without a read while it confirmed the row within ``revalidate_seconds``
(5 s by default); its first call after that re-reads (version, status). So a refresh or
a revocation made by process A reaches B's callers at most ``revalidate_seconds`` later,
never later (the rule documented in docs/PERFORMANCE.md, "Direct-mode token API").
"""

from __future__ import annotations

import pytest
from lifecycle_support import Rig, connect

from tokenkeep.errors import NeedsReauthError

WINDOW = 5.0


async def test_a_refresh_in_process_a_reaches_process_b_within_the_window(rig: Rig) -> None:
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    a, b = rig.coordinator, rig.new_coordinator(revalidate_seconds=WINDOW)
    old = await b.fresh_token("c1")
    new = await a.refresh("c1")
    assert new.version == old.version + 1
    rig.advance(WINDOW - 1)
    assert (await b.fresh_token("c1")).version == old.version  # inside the bound: cached
    rig.advance(1.01)
    seen = await b.fresh_token("c1")  # the bound has passed: the next call re-reads
    assert seen.version == new.version
    assert seen.access_token.fingerprint == new.access_token.fingerprint
    assert rig.refresh_grants() == 1  # B took A's token, it did not refresh again


async def test_a_revocation_in_process_a_reaches_process_b_within_the_window(rig: Rig) -> None:
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    b = rig.new_coordinator(revalidate_seconds=WINDOW)
    await b.fresh_token("c1")
    await rig.store.connections.set_status("c1", "needs_reauth", reason="revoked")
    rig.advance(WINDOW + 0.01)
    with pytest.raises(NeedsReauthError):
        await b.fresh_token("c1")
    assert rig.refresh_grants() == 0
