"""Refresh durability: a database outage while a rotating refresh is in flight.

PostgreSQL sits behind a TCP forwarder (``db_forwarder.py``) that the test switches off
while the token call is in flight; the token answer then arrives with no database to
commit it to. The answer must outlive the outage: kept (and journaled, encrypted, in the
data dir), the commit retried under the lease, and the connection still ``active`` with
the rotated refresh token stored -- which the emulator accepts for the next refresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url, select
from tests.lifecycle.lifecycle_support import (
    connect,
    register_integration,
    settings_for,
    token_client,
)
from tests.reliability.db_forwarder import DbForwarder, forwarding

from tokenkeep.clock import ManualClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.errors import NeedsReauthError, TokenkeepError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.store import Database, Store
from tokenkeep.store.models import OutboxRow

TOKEN_LATENCY = 0.6  # the token call is in flight this long; the outage starts with it
STALL = 3.0  # seconds the stalled link holds every byte


@dataclass
class OutageRig:
    store: Store
    emu: Emulator
    client: TokenEndpointClient
    forwarder: DbForwarder
    clock: ManualClock
    data_dir: Path

    def coordinator(self, **settings: Any) -> RefreshCoordinator:
        values: dict[str, Any] = {"data_dir": self.data_dir, "commit_retry_seconds": 60.0}
        values.update(settings)
        return RefreshCoordinator(
            self.store,
            self.client,
            settings=settings_for(self.store.db.safe_url, **values),
            clock=self.clock,
        )

    def grants(self) -> list[dict[str, Any]]:
        return self.emu.admin.requests(grant_type="refresh_token")

    def journal_files(self) -> list[Path]:
        folder = self.data_dir / "refresh-journal"
        return sorted(folder.rglob("*.json")) if folder.exists() else []

    async def refresh_during_outage(self, coordinator: RefreshCoordinator, outage: float) -> Any:
        """A forced refresh whose token answer arrives while the database is away."""
        return await self.refresh_during(coordinator, lambda: self.forwarder.outage(outage))

    async def refresh_during(
        self, coordinator: RefreshCoordinator, fault: Callable[[], Awaitable[None]]
    ) -> Any:
        """A forced refresh with ``fault`` started while the token call is in flight."""
        self.emu.admin.add_fault(
            {"target": "token", "kind": "latency", "latency_seconds": TOKEN_LATENCY, "count": 1}
        )
        task = asyncio.create_task(coordinator.refresh("c1"))
        for _ in range(1000):  # until the emulator holds the token call (its fault taken)
            if not self.emu.admin.faults.public() or task.done():
                break
            await asyncio.sleep(0.005)
        assert not task.done()
        await fault()
        return await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 60)


@pytest.fixture
async def outage_rig(pg_url: str, tmp_path: Path, keyring: Keyring) -> AsyncIterator[OutageRig]:
    clock = ManualClock()
    async with forwarding(pg_url) as forwarder:
        db = Database(forwarder.url_for(pg_url), clock=clock, connect_timeout=1.0)
        await db.upgrade()
        store = Store(db=db, keyring=keyring, clock=clock)
        try:
            async with Emulator.running(orgs=1, clock=clock) as emu, token_client(clock) as client:
                emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": True})
                await register_integration(store, emu)
                await connect(store, emu, client, emu.orgs[0].users[0], "c1", clock=clock)
                yield OutageRig(store, emu, client, forwarder, clock, tmp_path / "data")
        finally:
            await db.close()


async def _assert_one_answer(rig: OutageRig) -> None:
    """Nothing half-written: the stored access token, refresh token, issue time and version
    all belong to the emulator's last answer for the connection's family."""
    stored = await rig.store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    assert stored.credentials.refresh_token is not None
    refresh = stored.credentials.refresh_token.reveal()
    family = rig.emu.state.refresh_index[refresh]
    newest = family.refresh_token == refresh  # bools: no token in a failure message
    assert newest, "the stored refresh token is not the newest of its family"
    access = stored.credentials.access_token.reveal()
    same = family.access_tokens[-1] == access
    assert same, "the stored access token is not the one of that same answer"
    issued = rig.emu.state.access[access].issued_at
    assert stored.issued_at is not None
    assert abs(stored.issued_at.timestamp() - issued) < 0.002
    assert stored.expires_at is not None
    assert stored.expires_at > stored.issued_at
    assert stored.version == 1 + len(rig.grants())


async def _assert_rotation_kept(rig: OutageRig, coordinator: RefreshCoordinator) -> None:
    await _assert_one_answer(rig)
    stored = await rig.store.connections.get("c1", with_credentials=True)
    assert (stored.status, stored.status_reason) == ("active", None)
    assert stored.version == 2
    assert stored.credentials is not None
    assert stored.credentials.refresh_token is not None
    # The emulator accepts the stored (rotated) refresh token: the family is intact.
    again = await coordinator.refresh("c1")
    assert again.version == 3
    assert len(rig.grants()) == 2
    assert all(g["status"] == 200 for g in rig.grants())
    assert rig.journal_files() == []


@pytest.mark.slow
@pytest.mark.parametrize("outage", [1.5, 3.0, 8.0])
async def test_a_token_answer_outlives_a_database_outage(
    outage_rig: OutageRig, outage: float
) -> None:
    coordinator = outage_rig.coordinator()
    (result,) = await outage_rig.refresh_during_outage(coordinator, outage)
    assert not isinstance(result, BaseException), repr(result)
    assert result.version == 2
    await _assert_rotation_kept(outage_rig, coordinator)


@pytest.mark.slow
async def test_a_restart_replays_the_journal(outage_rig: OutageRig) -> None:
    """The commit gives up (short budget) while the database is still away: the answer is
    in the journal; the next process to start commits it."""
    first = outage_rig.coordinator(commit_retry_seconds=1.0)
    (result,) = await outage_rig.refresh_during_outage(first, 3.0)
    assert isinstance(result, TokenkeepError), repr(result)
    assert len(outage_rig.journal_files()) == 1
    text = outage_rig.journal_files()[0].read_text()
    assert outage_rig.grants()[-1]["status"] == 200
    restarted = outage_rig.coordinator()
    assert await restarted.replay_journal() == 1
    stored = await outage_rig.store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    assert stored.credentials.refresh_token is not None
    # The journal held the tokens encrypted only.
    assert stored.credentials.refresh_token.reveal() not in text
    assert stored.credentials.access_token.reveal() not in text
    await _assert_rotation_kept(outage_rig, restarted)


@pytest.mark.slow
async def test_a_lost_rotation_is_reported_as_such_never_as_a_revocation(
    outage_rig: OutageRig,
) -> None:
    """No journal possible (the data dir is a file) and the commit gives up: the rotated
    token is gone. The next refresh fails with invalid_grant and says why."""
    outage_rig.data_dir.parent.mkdir(parents=True, exist_ok=True)
    outage_rig.data_dir.write_text("not a directory")
    coordinator = outage_rig.coordinator(commit_retry_seconds=1.0)
    (result,) = await outage_rig.refresh_during_outage(coordinator, 3.0)
    assert isinstance(result, TokenkeepError), repr(result)
    outage_rig.clock.advance(120)  # the kept lease expires
    with pytest.raises(NeedsReauthError):
        await coordinator.refresh("c1")
    stored = await outage_rig.store.connections.get("c1")
    assert (stored.status, stored.status_reason) == ("needs_reauth", "revoked:rotation_lost")
    async with outage_rig.store.db.read() as session:
        rows = (
            await session.execute(
                select(OutboxRow.event_type, OutboxRow.payload).where(
                    OutboxRow.connection_id == "c1"
                )
            )
        ).all()
    reauth = [payload for kind, payload in rows if kind == "connection.needs_reauth"]
    assert [(p["reason"], p["sub_reason"]) for p in reauth] == [("revoked", "rotation_lost")]


def _terminate_backends(admin_dsn: str, database: str) -> int:
    """``pg_terminate_backend`` every session on ``database`` (the gateway's, heartbeat
    included); returns how many."""
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=3) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("repeat_for", [0.0, 2.0], ids=["once", "every-50ms-for-2s"])
async def test_backends_terminated_mid_refresh_lose_nothing(
    outage_rig: OutageRig, pg_url: str, pg_admin_dsn: str, repeat_for: float
) -> None:
    """The gateway's PostgreSQL sessions are killed server-side while the token call is in
    flight (once, or again and again while the answer is being committed)."""
    database = str(make_url(pg_url).database)
    terminated: list[int] = []

    async def terminate() -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + repeat_for
        while True:
            terminated.append(await asyncio.to_thread(_terminate_backends, pg_admin_dsn, database))
            if loop.time() >= until:
                return
            await asyncio.sleep(0.05)

    coordinator = outage_rig.coordinator()
    (result,) = await outage_rig.refresh_during(coordinator, terminate)
    assert sum(terminated) > 0  # the gateway's sessions were there, and were killed
    assert not isinstance(result, BaseException), repr(result)
    assert result.version == 2
    await _assert_rotation_kept(outage_rig, coordinator)


@pytest.mark.slow
@pytest.mark.parametrize("then", ["resume", "drop"])
async def test_a_stalled_link_mid_refresh_loses_nothing(outage_rig: OutageRig, then: str) -> None:
    """The link to PostgreSQL hangs (bytes held, nothing refused) for 3 s while the answer
    is being committed, then resumes, or drops every connection."""
    coordinator = outage_rig.coordinator()
    started = time.monotonic()
    (result,) = await outage_rig.refresh_during(
        coordinator, lambda: outage_rig.forwarder.stall(STALL, then=then)
    )
    # The commit was held by the stall (and, with "drop", its connection cut under it).
    assert time.monotonic() - started >= STALL
    assert (outage_rig.forwarder.cut > 0) == (then == "drop")
    assert not isinstance(result, BaseException), repr(result)
    assert result.version == 2
    await _assert_rotation_kept(outage_rig, coordinator)
