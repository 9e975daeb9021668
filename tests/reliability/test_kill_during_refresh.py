"""Kill -9 during refresh with rotation on: never a silent loss, and the window measured.

15 worker processes (``durable_worker.py``, mode ``refresh_loop``: forced refreshes back to
back, rotation on, PostgreSQL), each on its own connection, in batches of 5, each killed
with SIGKILL at a random instant. Then this process -- sharing the workers' data dir, so
their refresh journal -- plays the restarted gateway: it replays the journal and refreshes
every connection. A connection either refreshes (nothing lost) or ends ``needs_reauth``
with ``revoked:rotation_lost`` (a loss, reported as one); any other end is a silent loss.

The window between Salesforce answering and our commit is measured on 40 refreshes of one
connection: the emulator's request-log time of the answer (taken just before it writes
the response) against the operation-log time of the commit, both on the system clock.
The figures are printed (``-s``) and recorded in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from pathlib import Path
from typing import Any

import pytest
from tests.lifecycle.lifecycle_support import (
    connect,
    register_integration,
    settings_for,
    token_client,
)
from tests.reliability.worker_processes import go, kill_all, start_worker

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.emulator.state import User
from tokenkeep.errors import NeedsReauthError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.journal import JOURNAL_DIR_NAME
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.store import Store

KILLS = 15
BATCH = 5
LEASE = 1.0


async def _measured_windows(
    store: Store, emu: Emulator, client: TokenEndpointClient, user: User, coordinator: Any
) -> list[float]:
    """Answer → commit (ms) for 40 forced refreshes of one connection, one at a time: the
    emulator's log time of each answer against the operation-log time of its commit."""
    await connect(store, emu, client, user, "measured", clock=SystemClock())
    since = emu.clock.time()
    for _ in range(40):
        await coordinator.refresh("measured")
    answers = [g["time"] for g in emu.admin.requests(grant_type="refresh_token", since=since)]
    commits = sorted(
        op.at.timestamp()
        for op in await store.operations.list(
            connection_id="measured", kind="refresh", outcome="ok", limit=100
        )
    )
    assert len(answers) == len(commits) == 40
    return sorted((c - a) * 1000 for a, c in zip(answers, commits, strict=True))


@pytest.mark.slow
@pytest.mark.multiprocess
async def test_random_kills_mid_refresh_never_lose_a_connection_silently(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path
) -> None:
    clock = SystemClock()
    rng = random.Random(13)
    data_dir = tmp_path / "data"
    survived, reported = 0, 0
    silent: list[tuple[str, str | None]] = []
    async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
        emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": True})
        emu.admin.patch_app(emu.app_config.client_id, {"max_approvals": 1000})
        await register_integration(pg_store, emu)
        user = emu.orgs[0].users[0]
        settings = settings_for(pg_url, data_dir=data_dir, refresh_lease_seconds=LEASE)
        restarted = RefreshCoordinator(pg_store, client, settings=settings, clock=clock)
        for batch in range(KILLS // BATCH):
            ids = [f"k{batch}-{i}" for i in range(BATCH)]
            for cid in ids:
                await connect(pg_store, emu, client, user, cid, clock=clock)
            workers = list(
                await asyncio.gather(
                    *(
                        start_worker(
                            {
                                "db_url": pg_url,
                                "keys": keyring.export().reveal(),
                                "connection_id": cid,
                                "owner": f"victim-{cid}",
                                "data_dir": str(data_dir),
                                "lease_seconds": LEASE,
                                "mode": "refresh_loop",
                                "calls": 5000,
                            }
                        )
                        for cid in ids
                    )
                )
            )
            try:
                for w in workers:
                    await go(w)

                async def kill_later(w: asyncio.subprocess.Process, delay: float) -> None:
                    await asyncio.sleep(delay)
                    w.kill()  # SIGKILL
                    await w.wait()

                await asyncio.gather(*(kill_later(w, rng.uniform(0.3, 1.0)) for w in workers))
            finally:
                await kill_all(workers)
            # The restarted gateway: replay the journal, then refresh each connection.
            await restarted.replay_journal()
            outcomes = await asyncio.gather(
                *(asyncio.wait_for(restarted.refresh(cid), 30) for cid in ids),
                return_exceptions=True,
            )
            for cid, outcome in zip(ids, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    survived += 1
                    continue
                assert isinstance(outcome, NeedsReauthError), repr(outcome)
                row = await pg_store.connections.get(cid)
                if row.status_reason == "revoked:rotation_lost":
                    reported += 1
                else:
                    silent.append((cid, row.status_reason))
        windows = await _measured_windows(pg_store, emu, client, user, restarted)
    journal = data_dir / JOURNAL_DIR_NAME
    left = list(journal.rglob("*.json")) if journal.exists() else []
    print(
        f"\nkill -9 during refresh: {KILLS} kills, {survived} survived, {reported} lost and "
        f"reported rotation_lost, {len(silent)} silent; answer->commit window over "
        f"{len(windows)} refreshes: median {statistics.median(windows):.1f} ms, "
        f"p99 {windows[int(len(windows) * 0.99)]:.1f} ms, max {windows[-1]:.1f} ms"
    )
    assert silent == []
    assert survived + reported == KILLS
    assert left == []  # every journaled answer was committed or dropped
