"""The scheduler runs inside the gateway (``tokenkeep serve``) and as ``tokenkeep scheduler``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from lifecycle_support import connect, register_integration, token_client
from sqlalchemy import update

from tokenkeep.clock import SystemClock
from tokenkeep.config import load_settings
from tokenkeep.emulator import Emulator
from tokenkeep.runtime import Gateway
from tokenkeep.store import Store, open_store
from tokenkeep.store.models import ConnectionRow


async def _make_due(store: Store, connection_id: str, clock: SystemClock) -> None:
    async with store.db.write() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.id == connection_id)
            .values(next_refresh_at=clock.now() - timedelta(seconds=1))
        )


async def _wait_for_version(store: Store, connection_id: str, version: int) -> None:
    for _ in range(400):
        if (await store.connections.get(connection_id)).version >= version:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{connection_id} was not refreshed by the scheduler")


async def test_the_gateway_runs_the_scheduler_unless_disabled(tmp_path: Path) -> None:
    clock = SystemClock()
    base = {
        "data_dir": tmp_path / "data",
        "allow_insecure_loopback": True,
        "scheduler_interval_seconds": 0.1,
    }
    async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
        async with Gateway(load_settings(**base, scheduler_enabled=False)) as gateway:
            assert gateway.scheduler is None
            await register_integration(gateway.store, emu)
            await connect(gateway.store, emu, client, emu.orgs[0].users[0], "c1", clock=clock)
            await _make_due(gateway.store, "c1", clock)
            await asyncio.sleep(0.3)
            assert (await gateway.store.connections.get("c1")).version == 1
        async with Gateway(load_settings(**base)) as gateway:  # on by default
            assert gateway.scheduler is not None
            await _wait_for_version(gateway.store, "c1", 2)
    assert len(emu.admin.requests(grant_type="refresh_token")) == 1


@pytest.mark.multiprocess
async def test_tokenkeep_scheduler_command_refreshes_and_stops_on_sigterm(tmp_path: Path) -> None:
    clock = SystemClock()
    env = {
        **os.environ,
        "TOKENKEEP_DATA_DIR": str(tmp_path / "data"),
        "TOKENKEEP_ALLOW_INSECURE_LOOPBACK": "true",
        "TOKENKEEP_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "TOKENKEEP_SECRET_KEY": "tk_test_secret_key_for_the_scheduler",
    }
    settings = load_settings(data_dir=tmp_path / "data", allow_insecure_loopback=True)
    store = await open_store(settings, clock=clock)  # creates the database and the keys
    try:
        async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
            await register_integration(store, emu)
            await connect(store, emu, client, emu.orgs[0].users[0], "c1", clock=clock)
            await _make_due(store, "c1", clock)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from tokenkeep.cli import main; main()",
                "scheduler",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                await _wait_for_version(store, "c1", 2)
            finally:
                proc.send_signal(signal.SIGTERM)
                out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert b"scheduler is running" in out
            assert len(emu.admin.requests(grant_type="refresh_token")) == 1
    finally:
        await store.close()
