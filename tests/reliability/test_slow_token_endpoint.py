"""The token endpoint slower than the lease (issue 13, suite item 5).

Worker OS processes (``durable_worker.py``: the coordinator every gateway runs) on
PostgreSQL, ``TOKENKEEP_REFRESH_LEASE_SECONDS=1``, the emulator's token endpoint slowed
by a latency fault to several leases. While Salesforce processes a refresh, a second
refresh of the same refresh token is answered ``invalid_grant`` / "token request is
already being processed" (the emulator does the same).

* A live holder keeps its lease however slow the call: one grant, nobody else asks.
* A holder frozen (SIGSTOP) mid-call loses its lease to another process. With rotation
  on, the taker must not replay the refresh token while the frozen holder's answer can
  still land: the replay of a rotated-out token would revoke the whole family. It waits;
  the holder wakes, commits, and the family survives. With rotation off, the taker's
  forced refresh stores its token and the holder's late write is fenced off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from tests.lifecycle.lifecycle_support import connect, register_integration, token_client
from tests.reliability.worker_processes import go, kill_all, result_of, start_worker

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.oauth.models import oauth_app_for
from tokenkeep.store import Store
from tokenkeep.store.models import ConnectionRow

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

LEASE = 1.0
TOKEN_LATENCY = 4.0  # the slow refresh takes four leases


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _expire_row(store: Store) -> None:
    """Our row says the token expired: the next fresh_token refreshes."""
    now = SystemClock().now()
    async with store.db.write() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.id == "c1")
            .values(expires_at=now, next_refresh_at=now)
        )


class Steps:
    """A ``mode="steps"`` worker: one call per :meth:`ask`."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, what: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{what}\n".encode())
        await self.proc.stdin.drain()
        while True:  # skip the worker's log lines (warnings go to stdout)
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout=30)
            assert line, "the worker exited"
            if line.startswith(b"{"):
                answer: dict[str, Any] = json.loads(line)
                return answer


@contextlib.asynccontextmanager
async def _scene(
    store: Store, keyring: Keyring, pg_url: str, data_dir: Path, *, rotate: bool
) -> AsyncIterator[tuple[Emulator, Callable[..., Awaitable[asyncio.subprocess.Process]]]]:
    clock = SystemClock()
    workers: list[asyncio.subprocess.Process] = []

    async def worker(owner: str, mode: str, calls: int = 1) -> asyncio.subprocess.Process:
        proc = await start_worker(
            {
                "db_url": pg_url,
                "keys": keyring.export().reveal(),
                "connection_id": "c1",
                "owner": owner,
                "data_dir": str(data_dir / owner),
                "lease_seconds": LEASE,
                "mode": mode,
                "calls": calls,
            }
        )
        workers.append(proc)
        return proc

    async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
        emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": rotate})
        await register_integration(store, emu)
        await connect(store, emu, client, emu.orgs[0].users[0], "c1", clock=clock)
        try:
            # One refresh before the scene: the operation log then says whether the app
            # rotates (unknown counts as rotating, the safe side).
            first = await worker("gw-0", "refresh_loop")
            await go(first)
            await asyncio.wait_for(first.communicate(), timeout=30)
            assert first.returncode == 0
            await _expire_row(store)
            yield emu, worker
        finally:
            for proc in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            await kill_all(workers)


def _refresh_grants(emu: Emulator) -> list[tuple[int, str | None]]:
    """The scene's refresh grants (after the one before it)."""
    grants = emu.admin.requests(grant_type="refresh_token")
    return [(e["status"], e["errorCode"]) for e in grants][1:]


async def _family_alive(store: Store, emu: Emulator) -> None:
    """The stored refresh token still refreshes (the family was not revoked)."""
    conn = await store.connections.get("c1", with_credentials=True)
    integration = await store.integrations.get("sf", with_secrets=True)
    assert conn.credentials is not None
    assert conn.credentials.refresh_token is not None
    async with token_client(SystemClock()) as client:
        answer = await client.refresh(oauth_app_for(integration), conn.credentials.refresh_token)
    assert answer.access_token


async def test_a_live_holder_slower_than_the_lease_keeps_it(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path
) -> None:
    async with _scene(pg_store, keyring, pg_url, tmp_path, rotate=True) as (emu, worker):
        emu.admin.add_fault(
            {"target": "token", "kind": "latency", "latency_seconds": TOKEN_LATENCY, "count": 1}
        )
        procs = [await worker(f"gw-{i}", "stampede", calls=20) for i in range(2)]
        for proc in procs:
            await go(proc)
        outputs = [await result_of(proc, timeout=40) for proc in procs]
        assert [o["errors"] for o in outputs] == [[], []]
        assert sum(o["ok"] for o in outputs) == 40
        assert sum(o["refreshes"] for o in outputs) == 1
        # Nobody asked while the slow grant was in flight: no "already being processed".
        assert _refresh_grants(emu) == [(200, None)]
        stored = await pg_store.connections.get("c1", with_credentials=True)
        assert (stored.status, stored.version) == ("active", 3)
        await _family_alive(pg_store, emu)


async def _freeze_holder_mid_call(
    emu: Emulator, worker: Callable[..., Awaitable[asyncio.subprocess.Process]]
) -> tuple[asyncio.subprocess.Process, Steps]:
    """A (forced refresh) sends its token call and is frozen; B is ready, A's lease gone."""
    emu.admin.add_fault(
        {"target": "token", "kind": "latency", "latency_seconds": TOKEN_LATENCY, "count": 1}
    )
    holder = await worker("gw-a", "refresh_loop")
    taker = Steps(await worker("gw-b", "steps"))
    await go(taker.proc)
    await go(holder)
    await _until(lambda: bool(emu.state.refreshing), 20, "the holder's token call")
    os.kill(holder.pid, signal.SIGSTOP)
    await asyncio.sleep(LEASE + 0.5)  # its heartbeat is frozen too: the lease expires
    return holder, taker


async def test_with_rotation_a_taker_waits_for_the_frozen_holders_answer(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path
) -> None:
    async with _scene(pg_store, keyring, pg_url, tmp_path, rotate=True) as (emu, worker):
        holder, taker = await _freeze_holder_mid_call(emu, worker)
        first = await taker.ask("fresh")  # takes the expired lease: Salesforce is busy
        assert first["error"] == "TransientUpstreamError", first
        await _until(lambda: not emu.state.refreshing, 20, "the slow grant's answer")
        # The answer went to the frozen holder. Past the plain in-progress pause (2 s),
        # neither a caller nor a forced refresh replays the rotated-out token.
        await asyncio.sleep(2.5)
        assert (await taker.ask("fresh"))["error"] == "TransientUpstreamError"
        assert (await taker.ask("refresh"))["error"] == "TransientUpstreamError"
        os.kill(holder.pid, signal.SIGCONT)
        out, err = await asyncio.wait_for(holder.communicate(), timeout=30)
        assert holder.returncode == 0, err.decode()[-2000:]
        assert "refreshed 3" in out.decode().splitlines()  # its late commit is accepted
        stored = await pg_store.connections.get("c1", with_credentials=True)
        assert (stored.status, stored.version) == ("active", 3)
        served = await taker.ask("fresh")
        assert stored.credentials is not None
        assert served == {"version": 3, "fingerprint": stored.credentials.access_token.fingerprint}
        assert _refresh_grants(emu) == [
            (400, "invalid_grant"),  # "token request is already being processed"
            (200, None),  # the holder's slow grant, logged when answered
        ]
        await _family_alive(pg_store, emu)


async def test_without_rotation_the_frozen_holders_late_write_is_fenced(
    pg_store: Store, keyring: Keyring, pg_url: str, tmp_path: Path
) -> None:
    async with _scene(pg_store, keyring, pg_url, tmp_path, rotate=False) as (emu, worker):
        holder, taker = await _freeze_holder_mid_call(emu, worker)
        assert (await taker.ask("fresh"))["error"] == "TransientUpstreamError"
        await _until(lambda: not emu.state.refreshing, 20, "the slow grant's answer")
        await asyncio.sleep(2.5)  # the in-progress pause is over: no rotation to protect
        refreshed = await taker.ask("refresh")
        assert refreshed["version"] == 3, refreshed
        os.kill(holder.pid, signal.SIGCONT)
        out, err = await asyncio.wait_for(holder.communicate(), timeout=30)
        assert holder.returncode == 0, err.decode()[-2000:]
        assert "refreshed 3" in out.decode().splitlines()  # it serves the newer token
        stored = await pg_store.connections.get("c1", with_credentials=True)
        assert stored.credentials is not None
        # The taker's token is the stored one; the holder's older answer was fenced off.
        assert (stored.version, stored.credentials.access_token.fingerprint) == (
            3,
            refreshed["fingerprint"],
        )
        fenced = await pg_store.operations.list(connection_id="c1", outcome="fenced")
        assert len(fenced) == 1
        assert _refresh_grants(emu) == [(400, "invalid_grant"), (200, None), (200, None)]
        await _family_alive(pg_store, emu)
