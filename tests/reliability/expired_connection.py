"""Shared set-up of the multi-process refresh scenarios (not a test module): a PostgreSQL
store on the system clock, and a connection whose session has expired upstream and here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from tests.lifecycle.lifecycle_support import connect, register_integration
from tests.reliability.worker_processes import go, kill_all, result_of, start_worker

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.store import Database, Store
from tokenkeep.store.models import ConnectionRow


async def system_clock_store(url: str, keyring: Keyring) -> AsyncIterator[Store]:
    """A migrated store on ``url`` on the system clock (what worker processes run on)."""
    db = Database(url, clock=SystemClock())
    await db.upgrade()
    try:
        yield Store(db=db, keyring=keyring, clock=SystemClock())
    finally:
        await db.close()


async def expired_connection(
    store: Store,
    emu: Emulator,
    client: TokenEndpointClient,
    connection_id: str = "c1",
    *,
    rotation: bool,
    expired_for: float = 0.0,
) -> None:
    """Store ``connection_id`` (the emulator's first user), then expire its session upstream
    (the emulator's clock moves 7300 s) and here (``expires_at`` = ``expired_for`` seconds
    ago)."""
    clock = SystemClock()
    emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": rotation})
    await register_integration(store, emu)
    await connect(store, emu, client, emu.orgs[0].users[0], connection_id, clock=clock)
    emu.admin.advance_clock(7300)
    async with store.db.write() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.id == connection_id)
            .values(
                expires_at=clock.now() - timedelta(seconds=expired_for),
                next_refresh_at=clock.now(),
            )
        )


async def run_stampede(
    workers: list[dict[str, Any]], common: dict[str, Any], *, timeout: float = 60
) -> list[dict[str, Any]]:
    """Start one ``durable_worker.py`` per entry of ``workers`` (each merged over
    ``common``, ``mode="stampede"``), release them together, and return their results."""
    procs = []
    try:
        for extra in workers:
            # One at a time, each kept at once: a later start failing still kills the others.
            procs.append(await start_worker({**common, "mode": "stampede", **extra}))  # noqa: PERF401
        for proc in procs:
            await go(proc)
        return [await result_of(proc, timeout=timeout) for proc in procs]
    finally:
        await kill_all(procs)


def newest_refresh_token_is(emu: Emulator, refresh_token: str | None) -> bool:
    """Whether ``refresh_token`` is the live, current refresh token of its family."""
    family = emu.state.refresh_index.get(refresh_token or "")
    return family is not None and not family.revoked and family.refresh_token == refresh_token
