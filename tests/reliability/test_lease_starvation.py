"""Lease under CPU starvation: a stampede with rotation on, the gateways' event loops lagging
longer than the lease, exactly one refresh grant.

4 worker processes (``durable_worker.py``: the coordinator every gateway runs) on
PostgreSQL, pinned to one core next to a CPU burner, each with 100 concurrent
``fresh_token`` calls after the session expired upstream, and each event loop held for
1.3 s at a time (longer than ``TOKENKEEP_REFRESH_LEASE_SECONDS=1``) while the token call
is slow. A lease must never be taken over while its holder is alive: its heartbeat runs
on its own thread, so loop lag cannot starve it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from tests.lifecycle.lifecycle_support import connect, register_integration, token_client
from tests.reliability.worker_processes import go, kill_all, result_of, start_worker

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.store import Store
from tokenkeep.store.models import ConnectionRow

PROCESSES = 4
CALLS = 400
LAG_SECONDS = 1.3  # each worker's event loop is held this long at a time (> the lease)


@pytest.fixture
def burner() -> Iterator[None]:
    """A process spinning on core 0, where the workers are pinned."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import os\nos.sched_setaffinity(0, {0})\nwhile True: pass"]
    )
    try:
        yield
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def _stampede(
    store: Store, keyring: Keyring, pg_url: str, data_dir: Path, lease: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    clock = SystemClock()
    async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
        emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": True})
        await register_integration(store, emu)
        await connect(store, emu, client, emu.orgs[0].users[0], "c1", clock=clock)
        emu.admin.advance_clock(7300)  # the session expired upstream
        async with store.db.write() as session:
            await session.execute(
                update(ConnectionRow)
                .where(ConnectionRow.id == "c1")
                .values(expires_at=clock.now(), next_refresh_at=clock.now())
            )
        # The token call is slow: the lease holder's loop is starved while it is in flight.
        emu.admin.add_fault(
            {"target": "token", "kind": "latency", "latency_seconds": 1.0, "count": 1}
        )
        workers: list[asyncio.subprocess.Process] = []
        try:
            started = await asyncio.gather(
                *(
                    start_worker(
                        {
                            "db_url": pg_url,
                            "keys": keyring.export().reveal(),
                            "connection_id": "c1",
                            "owner": f"gw-{i}",
                            "data_dir": str(data_dir),
                            "lease_seconds": lease,
                            "mode": "stampede",
                            "calls": CALLS // PROCESSES,
                            "lag_seconds": LAG_SECONDS,
                            "cpu": 0,
                        }
                    )
                    for i in range(PROCESSES)
                ),
                return_exceptions=True,
            )
            workers = [w for w in started if isinstance(w, asyncio.subprocess.Process)]
            assert len(workers) == PROCESSES, started
            for w in workers:
                await go(w)
            outputs = [await result_of(w, timeout=50) for w in workers]
        finally:
            await kill_all(workers)
        return outputs, emu.admin.requests(grant_type="refresh_token")


async def _assert_one_refresh(store: Store, outputs: list[dict[str, Any]], grants: list) -> None:
    assert len(grants) == 1, grants
    assert [o["errors"] for o in outputs] == [[]] * PROCESSES
    assert sum(o["ok"] for o in outputs) == CALLS
    assert sum(o["refreshes"] for o in outputs) == 1
    stored = await store.connections.get("c1")
    assert (stored.status, stored.version) == ("active", 2)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.usefixtures("burner")
async def test_a_one_second_lease_survives_a_starved_event_loop(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path
) -> None:
    outputs, grants = await _stampede(pg_store, keyring, pg_url, tmp_path / "data", lease=1.0)
    await _assert_one_refresh(pg_store, outputs, grants)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.usefixtures("burner")
async def test_the_default_lease_under_starvation_makes_one_grant(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path
) -> None:
    outputs, grants = await _stampede(pg_store, keyring, pg_url, tmp_path / "data", lease=30.0)
    await _assert_one_refresh(pg_store, outputs, grants)
