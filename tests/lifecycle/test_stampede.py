"""Stampede: 1,000 concurrent fresh_token calls over several OS processes → one refresh."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from lifecycle_support import connect, register_integration, token_client
from sqlalchemy import update

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.store import Store
from tokenkeep.store.models import ConnectionRow

WORKER = Path(__file__).with_name("stampede_worker.py")
TOTAL_CALLS = 1000


@pytest.fixture
def clock() -> SystemClock:
    """Worker processes run on the system clock, so the test's store does too."""
    return SystemClock()


async def _run_worker(args: dict[str, object]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        json.dumps(args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.multiprocess
async def test_1000_callers_over_several_processes_cause_one_refresh(
    store: Store, keyring: Keyring, db_url: str, clock: SystemClock
) -> None:
    processes = 2 if db_url.startswith("sqlite") else 4
    async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
        await register_integration(store, emu)
        await connect(store, emu, client, emu.orgs[0].users[0], "c1", clock=clock)
        # Expired on both sides: the emulator's session and our own expiry estimate.
        emu.admin.advance_clock(7300)
        async with store.db.write() as session:
            await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.id == "c1")
                .values(expires_at=clock.now(), next_refresh_at=clock.now())
            )
        workers = [
            await _run_worker(
                {
                    "db_url": db_url,
                    "keys": keyring.export().reveal(),
                    "connection_id": "c1",
                    "calls": TOTAL_CALLS // processes,
                    "owner": f"worker-{i}",
                }
            )
            for i in range(processes)
        ]
        try:
            for w in workers:
                assert w.stdout is not None
                line = await asyncio.wait_for(w.stdout.readline(), timeout=60)
                assert line.strip() == b"ready", line
            for w in workers:  # release them together
                assert w.stdin is not None
                w.stdin.write(b"go\n")
                await w.stdin.drain()
            outputs = []
            for w in workers:
                out, err = await asyncio.wait_for(w.communicate(), timeout=90)
                assert w.returncode == 0, err.decode()[-2000:]
                outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
        finally:
            for w in workers:
                if w.returncode is None:
                    w.kill()
                    await w.wait()
        grants = emu.admin.requests(grant_type="refresh_token")
    assert len(grants) == 1
    assert sum(o["ok"] for o in outputs) == TOTAL_CALLS
    assert all(not o["errors"] for o in outputs)
    assert sum(o["refreshes"] for o in outputs) == 1
    fingerprints = {fp for o in outputs for fp in o["fingerprints"]}
    stored = await store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    assert fingerprints == {stored.credentials.access_token.fingerprint}
    assert stored.version == 2
