"""Kill -9 during refresh: never a loss without rotation, never a silent one with it.

50 worker processes (``durable_worker.py``, mode ``refresh_loop``: forced refreshes back to
back, PostgreSQL), each on its own connection, in batches of 10, each killed with SIGKILL
at a random instant once it refreshes (0-250 ms after its first commit); once with rotation
off, once with rotation on. The workers are forked from one pre-imported process (a
"zygote"), so 50 starts cost milliseconds, not 50 interpreter starts. Then this process --
sharing the workers' data dir, so their refresh journal -- plays the restarted gateway: it
replays the journal and refreshes every connection. Without rotation every connection
refreshes (a refresh token outlives any kill). With rotation a connection either refreshes
(nothing lost) or ends ``needs_reauth`` with ``revoked:rotation_lost`` (a loss, reported as
one); any other end is a silent loss.

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
from tests.reliability.worker_processes import fork_worker, kill_all, kill_pid, start_worker

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.emulator.state import User
from tokenkeep.errors import NeedsReauthError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.journal import JOURNAL_DIR_NAME
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.store import Store

KILLS = 50
BATCH = 10
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


async def _kill_once_refreshing(out: Path, pid: int, delay: float) -> None:
    """SIGKILL the worker ``delay`` s after its first committed refresh (bounded wait)."""
    for _ in range(6000):  # 60 s at most: a start on a crowded machine
        if out.exists() and "refreshed" in out.read_text():
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError(f"worker never refreshed: {out.read_text()[-2000:]}")
    await asyncio.sleep(delay)
    await kill_pid(pid)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("rotation", [False, True], ids=["rotation-off", "rotation-on"])
async def test_random_kills_mid_refresh_never_lose_a_connection_silently(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path, rotation: bool
) -> None:
    clock = SystemClock()
    seed = random.randrange(2**32)
    print(f"\nkill seed: {seed}")
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    survived, reported = 0, 0
    killed_after: list[int] = []  # refreshes each worker committed before its kill
    silent: list[tuple[str, str | None]] = []
    async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
        emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": rotation})
        emu.admin.patch_app(emu.app_config.client_id, {"max_approvals": 1000})
        await register_integration(pg_store, emu)
        user = emu.orgs[0].users[0]
        settings = settings_for(pg_url, data_dir=data_dir, refresh_lease_seconds=LEASE)
        restarted = RefreshCoordinator(pg_store, client, settings=settings, clock=clock)
        zygote = await start_worker("zygote")
        try:
            for batch in range(KILLS // BATCH):
                ids = [f"k{batch}-{i}" for i in range(BATCH)]
                for cid in ids:
                    await connect(pg_store, emu, client, user, cid, clock=clock)
                outs = {cid: tmp_path / f"{cid}.out" for cid in ids}
                pids = {
                    cid: await fork_worker(
                        zygote,
                        {
                            "db_url": pg_url,
                            "keys": keyring.export().reveal(),
                            "connection_id": cid,
                            "owner": f"victim-{cid}",
                            "data_dir": str(data_dir),
                            "lease_seconds": LEASE,
                            "mode": "refresh_loop",
                            "calls": 5000,
                            "out": str(outs[cid]),
                        },
                    )
                    for cid in ids
                }

                try:
                    await asyncio.gather(
                        *(
                            _kill_once_refreshing(outs[cid], pids[cid], rng.uniform(0.0, 0.25))
                            for cid in ids
                        )
                    )
                finally:
                    for pid in pids.values():
                        await kill_pid(pid)
                killed_after.extend(outs[cid].read_text().count("refreshed") for cid in ids)
                # The restarted gateway: replay the journal, then refresh each connection.
                await restarted.replay_journal()
                outcomes = await asyncio.gather(
                    *(asyncio.wait_for(restarted.refresh(cid), 60) for cid in ids),
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
        finally:
            await kill_all([zygote])
        windows = await _measured_windows(pg_store, emu, client, user, restarted)
        grants = emu.admin.requests(grant_type="refresh_token")
    journal = data_dir / JOURNAL_DIR_NAME
    left = list(journal.rglob("*.json")) if journal.exists() else []
    print(
        f"kill -9 during refresh (rotation {'on' if rotation else 'off'}): {KILLS} kills, "
        f"{survived} survived, {reported} lost and reported rotation_lost, {len(silent)} "
        f"silent; answer->commit window over "
        f"{len(windows)} refreshes: median {statistics.median(windows):.1f} ms, "
        f"p99 {windows[int(len(windows) * 0.99)]:.1f} ms, max {windows[-1]:.1f} ms; "
        f"{len(grants)} refresh grants; refreshes per worker before its kill: "
        f"median {statistics.median(killed_after)}, min {min(killed_after)}"
    )
    assert silent == []
    assert survived + reported == KILLS
    if not rotation:
        assert survived == KILLS  # no rotation: a kill never costs the refresh token
    assert left == []  # every journaled answer was committed or dropped
