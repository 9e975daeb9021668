"""Clock skew of ±5 minutes between gateway processes sharing PostgreSQL: still one
refresh, and no expired token handed out.

Four worker processes (``durable_worker.py``) run on the system clock shifted by -300 s
(two) and +300 s (two). Rotation on, the session expired upstream, the token call held
1.5 s by the emulator. A -300 s worker is released first and must take the lease (a
gateway 5 minutes behind must not take an expired token for a live one); the others
arrive while its call is in flight, and a +300 s worker must not take that live lease for
an expired one. Every distinct token handed out is then used on the emulator's data API:
all must be accepted. The connection expired just now, or 10 minutes ago.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from tests.lifecycle.lifecycle_support import token_client
from tests.reliability.expired_connection import (
    expired_connection,
    newest_refresh_token_is,
)
from tests.reliability.worker_processes import go, kill_all, result_of, start_worker

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.store import Store
from tokenkeep.store.models import ConnectionRow

SKEW = 300.0
CALLS = 50


async def _lease_owner(store: Store) -> str | None:
    async with store.db.read() as session:
        owner: str | None = await session.scalar(
            select(ConnectionRow.lease_owner).where(ConnectionRow.id == "c1")
        )
    return owner


@pytest.mark.multiprocess
@pytest.mark.parametrize("expired_for", [0.0, 600.0], ids=["just-expired", "expired-10-min"])
async def test_skewed_gateways_make_one_refresh_and_hand_out_no_expired_token(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path, expired_for: float
) -> None:
    async with Emulator.running(orgs=1) as emu, token_client(SystemClock()) as client:
        await expired_connection(pg_store, emu, client, rotation=True, expired_for=expired_for)
        emu.admin.add_fault(
            {"target": "token", "kind": "latency", "latency_seconds": 1.5, "count": 1}
        )
        common = {
            "db_url": pg_url,
            "keys": keyring.export().reveal(),
            "connection_id": "c1",
            "data_dir": str(tmp_path / "data"),
            "lease_seconds": 30.0,
            "mode": "stampede",
            "calls": CALLS,
            "probe": True,
        }
        offsets = [-SKEW, SKEW, -SKEW, SKEW]
        procs: list[asyncio.subprocess.Process] = []
        try:
            for i, offset in enumerate(offsets):
                procs.append(
                    await start_worker({**common, "owner": f"gw{i}", "clock_offset": offset})
                )
            await go(procs[0])  # behind by 5 minutes: it takes the lease
            for _ in range(500):  # bounded: 5 s
                if await _lease_owner(pg_store) == "gw0":
                    break
                await asyncio.sleep(0.01)
            assert await _lease_owner(pg_store) == "gw0"
            for proc in procs[1:]:
                await go(proc)
            outputs = [await result_of(p, timeout=60) for p in procs]
        finally:
            await kill_all(procs)
        grants = emu.admin.requests(grant_type="refresh_token")
        stored = await pg_store.connections.get("c1", with_credentials=True)
        assert stored.credentials is not None
        assert stored.credentials.refresh_token is not None
        newest = newest_refresh_token_is(emu, stored.credentials.refresh_token.reveal())
    assert [g["status"] for g in grants] == [200]
    assert [o["errors"] for o in outputs] == [[]] * len(offsets)
    assert sum(o["ok"] for o in outputs) == CALLS * len(offsets)
    assert [o["probes"] for o in outputs] == [[200]] * len(offsets)
    assert {fp for o in outputs for fp in o["fingerprints"]} == {
        stored.credentials.access_token.fingerprint
    }
    assert (stored.status, stored.version) == ("active", 2)
    assert newest
