"""Soak: 30 minutes of simulated time, rotation on, 200 connections, random concurrent use.

Gateway and emulator share one :class:`ManualClock`; the test advances it in steps of
``STEP`` seconds (sessions last ``SESSION`` seconds, so every connection's session expires
several times). At each step, at random: concurrent ``fresh_token`` calls (what ``GET
/connections/{id}/token`` and the proxy run), forced refreshes, and a scheduler cycle, all
in one ``gather``. The random seed is printed.

Checked: every token handed out is live at the emulator at the instant it is handed out
(read from the emulator's state with no await in between), and at the end every connection
is ``active`` with the refresh token the emulator issued last for its family.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from tests.lifecycle.lifecycle_support import (
    connect,
    register_integration,
    settings_for,
    token_client,
)

from tokenkeep.clock import ManualClock
from tokenkeep.emulator import Emulator
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.scheduler import RefreshScheduler
from tokenkeep.observability.logging import configure_logging
from tokenkeep.store import Store

CONNECTIONS = 200
SIMULATED = 30 * 60.0
STEP = 20.0
SESSION = 600  # seconds: the org's session timeout
CALLS_PER_STEP = 30
FORCED_PER_STEP = 3


@pytest.fixture(autouse=True)
def _quiet_logging() -> None:
    """Warnings only: thousands of debug lines would cost more than the soak itself."""
    configure_logging("console", "WARNING")


async def assert_families_intact(store: Store, emu: Emulator, ids: list[str]) -> None:
    """Every connection ``active``, its stored refresh token the newest of its family."""
    for cid in ids:
        stored = await store.connections.get(cid, with_credentials=True)
        assert (stored.status, stored.status_reason) == ("active", None), cid
        assert stored.credentials is not None
        assert stored.credentials.refresh_token is not None
        refresh = stored.credentials.refresh_token.reveal()
        family = emu.state.refresh_index.get(refresh)
        assert family is not None, f"{cid}: stored refresh token unknown to the emulator"
        assert not family.revoked, f"{cid}: family revoked"
        newest = family.refresh_token == refresh  # (a bool: no token in a failure message)
        assert newest, f"{cid}: stored refresh token rotated out"


@pytest.mark.slow
async def test_soak_30_simulated_minutes_loses_nothing_and_hands_out_no_expired_token(
    db_url: str, store: Store, clock: ManualClock
) -> None:
    seed = random.randrange(2**32)
    print(f"\nsoak seed: {seed} ({db_url.split(':', 1)[0]})")
    rng = random.Random(seed)
    started = time.perf_counter()
    async with Emulator.running(orgs=2, clock=clock) as emu, token_client(clock) as client:
        app = emu.app_config.client_id
        emu.admin.patch_app(app, {"rotate_refresh_tokens": True, "max_approvals": 1000})
        for org in emu.orgs:
            emu.admin.patch_org(org.org_id, {"session_timeout_seconds": SESSION})
        await register_integration(store, emu, session_timeout_seconds=SESSION)
        users = [u for org in emu.orgs for u in org.users]
        ids = [f"s{i:03d}" for i in range(CONNECTIONS)]
        for i, cid in enumerate(ids):
            await connect(
                store, emu, client, users[i % len(users)], cid, clock=clock, session_timeout=SESSION
            )
        settings = settings_for(db_url)
        coordinator = RefreshCoordinator(store, client, settings=settings, clock=clock)
        scheduler = RefreshScheduler(
            store, coordinator, settings=settings, clock=clock, rng=random.Random(seed)
        )
        handed_out = 0
        expired: list[tuple[str, float]] = []
        errors: list[str] = []

        async def call(cid: str) -> None:
            nonlocal handed_out
            try:
                token = await coordinator.fresh_token(cid)
            except Exception as exc:  # recorded, asserted empty below
                errors.append(f"fresh_token {cid}: {exc!r}"[:300])
                return
            # No await since the answer: this is the instant it is handed out.
            handed_out += 1
            if emu.state.live(token.access_token.reveal()) is None:
                expired.append((cid, clock.time()))

        async def forced(cid: str) -> None:
            try:
                await coordinator.refresh(cid)
            except Exception as exc:
                errors.append(f"refresh {cid}: {exc!r}"[:300])

        async def cycle() -> None:
            report = await scheduler.run_once()
            if report.failed:
                errors.append(f"scheduler: {report}")

        steps = int(SIMULATED / STEP)
        for _ in range(steps):
            clock.advance(STEP)
            work: list[Any] = [call(rng.choice(ids)) for _ in range(CALLS_PER_STEP)]
            work += [forced(rng.choice(ids)) for _ in range(FORCED_PER_STEP)]
            if rng.random() < 0.5:
                work.append(cycle())
            rng.shuffle(work)
            await asyncio.wait_for(asyncio.gather(*work), 30)
        grants = len(emu.admin.requests(grant_type="refresh_token"))
        await assert_families_intact(store, emu, ids)
    wall = time.perf_counter() - started
    print(
        f"soak: {steps} steps of {STEP:.0f} s, {handed_out} tokens handed out, "
        f"{grants} refresh grants, {scheduler.cycles} scheduler cycles, "
        f"{len(expired)} expired, {len(errors)} errors, {wall:.1f} s wall"
    )
    assert errors == []
    assert expired == []
    assert handed_out == steps * CALLS_PER_STEP
