"""Encryption key rotation under load: no failed request, and the old key retired after.

Two gateway-like stores on one PostgreSQL database, each with its own keyring loaded from
the data dir's keys file (as two processes would), serve a bounded loop of concurrent
calls (8 lanes, each on its own connections) -- ``fresh_token`` with the cache dropped (a
decrypting read), forced refreshes (a read and a write) and credential reads -- while
``tokenkeep keys rotate`` runs as its own OS process: it writes the new key to the keys
file, makes it primary and re-encrypts every row. Neither store is told: each must pick
the new key up from the file (when it meets a value under it, or before a write).

Checked: zero failed calls; afterwards every row is under the new key and decrypts with a
keyring holding the new key only (the old key can be retired), and a refresh still works.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.lifecycle.lifecycle_support import (
    connect,
    register_integration,
    settings_for,
    token_client,
)
from tests.reliability.worker_processes import SRC

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import KEYS_FILE_NAME, Keyring, load_or_create_keyring
from tokenkeep.emulator import Emulator
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.observability.logging import configure_logging
from tokenkeep.store import Database, Store, verify_keyring
from tokenkeep.store.keys import _ENCRYPTED
from tokenkeep.store.models import IntegrationRow

CONNECTIONS = 100
MAX_CALLS = 2000
LANES = 8


@pytest.fixture(autouse=True)
def _quiet_logging() -> None:
    configure_logging("console", "WARNING")


async def _rotate_in_another_process(pg_url: str, data_dir: Path) -> str:
    """``tokenkeep keys rotate`` as its own OS process (bounded); returns its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(
        PYTHONPATH=str(SRC),
        TOKENKEEP_DATABASE_URL=pg_url,
        TOKENKEEP_DATA_DIR=str(data_dir),
        TOKENKEEP_LOG_LEVEL="WARNING",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenkeep",
        "keys",
        "rotate",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()[-2000:]
    return out.decode()


@pytest.fixture
async def two_stores(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Store, Store, Path]]:
    data_dir = tmp_path / "data"
    clock = SystemClock()
    settings = settings_for(pg_url, data_dir=data_dir)
    dbs = [Database(pg_url, clock=clock) for _ in range(2)]
    await dbs[0].upgrade()
    stores = []
    for db in dbs:
        keyring = load_or_create_keyring(settings)  # the keys file, as a process loads it
        await verify_keyring(db, keyring)
        stores.append(Store(db=db, keyring=keyring, clock=clock))
    try:
        yield stores[0], stores[1], data_dir
    finally:
        for db in dbs:
            await db.close()


@pytest.mark.slow
@pytest.mark.multiprocess
async def test_key_rotation_under_load_fails_no_call(
    two_stores: tuple[Store, Store, Path], pg_url: str
) -> None:
    first, second, data_dir = two_stores
    old_key = first.keyring.primary_key_id
    seed = random.randrange(2**32)
    print(f"\nkey rotation seed: {seed}")
    rng = random.Random(seed)
    clock = SystemClock()
    async with Emulator.running(orgs=2) as emu, token_client(clock) as client:
        emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": True})
        emu.admin.patch_app(emu.app_config.client_id, {"max_approvals": 1000})
        await register_integration(first, emu)
        users = [u for org in emu.orgs for u in org.users]
        ids = [f"r{i:02d}" for i in range(CONNECTIONS)]
        for i, cid in enumerate(ids):
            await connect(first, emu, client, users[i % len(users)], cid, clock=clock)
        settings = settings_for(pg_url, data_dir=data_dir)
        coordinators = [
            RefreshCoordinator(s, client, settings=settings, clock=clock) for s in (first, second)
        ]
        calls = during = 0
        failures: list[str] = []
        rotating = asyncio.create_task(_rotate_in_another_process(pg_url, data_dir))

        async def lane(mine: list[str]) -> None:
            # Each lane has its own connections: the rotation is what runs concurrently
            # with every call, not two refreshes of one connection (the stampede tests').
            nonlocal calls, during
            while calls < MAX_CALLS:
                calls += 1
                during += not rotating.done()
                cid = rng.choice(mine)
                n = rng.randrange(2)
                coordinator, store = coordinators[n], (first, second)[n]
                kind = rng.choice(("fresh_token", "refresh", "read"))
                try:
                    if kind == "fresh_token":
                        coordinator.forget(cid)
                        await coordinator.fresh_token(cid)
                    elif kind == "refresh":
                        await coordinator.refresh(cid)
                    else:
                        conn = await store.connections.get(cid, with_credentials=True)
                        assert conn.credentials is not None
                except Exception as exc:  # counted, asserted empty below
                    failures.append(f"{kind} {cid} via store {n}: {exc!r}"[:300])

        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(lane(ids[i::LANES]) for i in range(LANES))), 300)
        assert rotating.done(), "the rotation outlived the load: make MAX_CALLS larger"
        output = await rotating
        wall = time.perf_counter() - started
        new_key = Keyring.parse((data_dir / KEYS_FILE_NAME).read_text().strip()).primary_key_id
        # Rows the two stores wrote during the rotation: still under the old key?
        async with first.db.read() as session:
            stale = 0
            for model, _pk, _cols, _ver in _ENCRYPTED:
                stale += int(
                    await session.scalar(
                        select(func.count()).where(
                            model.key_id.is_not(None), model.key_id != new_key
                        )
                    )
                    or 0
                )
        print(
            f"key rotation under load: {calls} calls in {wall:.1f} s ({during} while the CLI "
            f"ran), {len(failures)} failed, "
            f"{stale} row(s) left under the old key; CLI: {output.strip()[-200:]}"
        )
        assert failures == []
        assert new_key != old_key
        assert first.keyring.primary_key_id == second.keyring.primary_key_id == new_key
        assert stale == 0
        # Retire the old key: a keyring holding the new key only reads every row.
        keys_text = (data_dir / KEYS_FILE_NAME).read_text().strip()
        only_new = Keyring.parse(keys_text.split(",")[0])
        assert only_new.key_ids == (new_key,)
        await verify_keyring(first.db, only_new)
        retired = Store(db=first.db, keyring=only_new, clock=clock)
        await retired.integrations.get("sf", with_secrets=True)
        for cid in ids:
            conn = await retired.connections.get(cid, with_credentials=True)
            assert conn.status == "active", cid
            assert conn.credentials is not None
        after = RefreshCoordinator(retired, client, settings=settings, clock=clock)
        assert (await after.refresh(ids[0])).version > 1


@pytest.mark.slow
@pytest.mark.multiprocess
async def test_a_process_that_only_writes_adopts_the_new_key(
    two_stores: tuple[Store, Store, Path], pg_url: str
) -> None:
    """A gateway that reads nothing during and after the rotation (it never meets a value
    under the new key) and then writes -- a new integration secret, a new connection --
    writes under the new key, so the old key can still be retired."""
    _first, second, data_dir = two_stores
    clock = SystemClock()
    await _rotate_in_another_process(pg_url, data_dir)
    new_key = Keyring.parse((data_dir / KEYS_FILE_NAME).read_text().strip()).primary_key_id
    async with Emulator.running(orgs=1) as emu, token_client(clock) as client:
        await register_integration(second, emu)
        conn = await connect(second, emu, client, emu.orgs[0].users[0], "late", clock=clock)
    assert second.keyring.primary_key_id == new_key
    assert conn.key_id == new_key
    async with second.db.read() as session:
        kids = set((await session.scalars(select(IntegrationRow.key_id))).all())
    assert kids == {new_key}
    only_new = Keyring.parse((data_dir / KEYS_FILE_NAME).read_text().strip().split(",")[0])
    await verify_keyring(second.db, only_new)
