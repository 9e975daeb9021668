"""Helpers for the lifecycle tests: a store + emulator + coordinator wired together.

Connections are made the real way (headless authorization on the emulator, then the code
exchange through tokenkeep's own TokenEndpointClient) and stored through the store's
repository, so every test starts from what the connect flow would have stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.config import Settings, load_settings
from tokenkeep.diagnosis.probes import Probes
from tokenkeep.diagnosis.service import Diagnoser
from tokenkeep.emulator import Emulator
from tokenkeep.emulator.state import User
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.models import oauth_app_for
from tokenkeep.oauth.session import create_session
from tokenkeep.store import Connection, ConnectionInput, Store

INTEGRATION = "sf"
SCHEDULER_WORKER = Path(__file__).with_name("scheduler_worker.py")
_SRC = Path(__file__).resolve().parents[2] / "src"
SESSION_TIMEOUT = 7200


def settings_for(db_url: str, **overrides: Any) -> Settings:
    """Settings for a coordinator on ``db_url`` (lease and attempts overridable)."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "allow_insecure_loopback": True,
        "refresh_lease_seconds": 30.0,
        "refresh_max_attempts": 3,
    }
    values.update(overrides)
    return load_settings(**values)


async def register_integration(store: Store, emu: Emulator, **overrides: Any) -> None:
    """The emulator's connected app as integration ``sf``."""
    app = emu.app_config
    values: dict[str, Any] = {
        "provider": "salesforce",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "login_url": emu.login_url,
        "scopes": ["api", "refresh_token"],
        "auth_mode": "oauth2",
        "session_timeout_seconds": SESSION_TIMEOUT,
    }
    values.update(overrides)
    await store.integrations.put(overrides.pop("key", INTEGRATION), **values)


async def connect(
    store: Store,
    emu: Emulator,
    client: TokenEndpointClient,
    user: User,
    connection_id: str,
    *,
    clock: Clock,
    session_timeout: int = SESSION_TIMEOUT,
    schedule: bool = True,
) -> Connection:
    """Authorize ``user`` headlessly, exchange the code, store the connection.

    ``schedule=False`` leaves ``next_refresh_at`` empty (like an import) for the scheduler
    to plan."""
    integration = await store.integrations.get(INTEGRATION, with_secrets=True)
    app = oauth_app_for(integration)
    redirect = emu.app_config.redirect_uris[0]
    code = emu.admin.authorize(
        {
            "client_id": app.client_id,
            "username": user.username,
            "redirect_uri": redirect,
            "scope": "api refresh_token",
        }
    )["code"]
    tokens = await client.exchange_code(app, code, redirect)
    assert tokens.org_id
    assert tokens.user_id
    assert tokens.refresh_token
    issued = utc_from_timestamp(tokens.received_at)
    expires = issued + timedelta(seconds=session_timeout)
    return await store.connections.create(
        ConnectionInput(
            id=connection_id,
            integration_key=INTEGRATION,
            org_id=tokens.org_id,
            user_id=tokens.user_id,
            username=user.username,
            instance_url=tokens.instance_url,
            id_url=tokens.id_url,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            issued_at=issued,
            expires_at=expires,
            next_refresh_at=expires - timedelta(seconds=900) if schedule else None,
            issued_to_address=tokens.local_address,
        )
    )


@dataclass
class Rig:
    """What a lifecycle test works with."""

    store: Store
    emu: Emulator
    client: TokenEndpointClient
    coordinator: RefreshCoordinator
    settings: Settings
    clock: Any

    def advance(self, seconds: float) -> None:
        """Move time: the emulator shares our manual clock, so both move at once."""
        self.clock.advance(seconds)

    def refresh_grants(self) -> int:
        """How many refresh_token grants the emulator has seen."""
        return len(self.emu.admin.requests(grant_type="refresh_token"))

    def diagnoser(self, coordinator: RefreshCoordinator | None = None) -> Diagnoser:
        """The diagnosis service over ``coordinator`` (the rig's by default): what a real
        gateway hands the proxy as its token source."""
        return Diagnoser(
            self.store,
            coordinator or self.coordinator,
            Probes(self.client, self.settings, self.clock),
            settings=self.settings,
            clock=self.clock,
        )

    def new_coordinator(self, **kwargs: Any) -> RefreshCoordinator:
        """Another coordinator on the same store (a second worker in the same process)."""
        return RefreshCoordinator(
            self.store, self.client, settings=self.settings, clock=self.clock, **kwargs
        )


@contextlib.asynccontextmanager
async def token_client(clock: Clock) -> AsyncIterator[TokenEndpointClient]:
    """A TokenEndpointClient with its own aiohttp session."""
    session = create_session(timeout_seconds=20)
    try:
        yield TokenEndpointClient(session, clock=clock)
    finally:
        await session.close()


async def start_scheduler_worker(args: dict[str, Any], log: Path) -> asyncio.subprocess.Process:
    """A ``scheduler_worker.py`` OS process with ``args`` (its stderr in ``log``), once it
    printed ``ready``; raises RuntimeError if it did not within 60 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(PYTHONPATH=str(_SRC), TOKENKEEP_LOG_LEVEL="WARNING")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCHEDULER_WORKER),
        json.dumps(args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log.open("wb"),
        env=env,
    )
    if proc.stdout is None or (
        (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).strip() != b"ready"
    ):
        raise RuntimeError(f"a scheduler did not start: see {log}")
    return proc


async def stop_scheduler_worker(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """Ask a scheduler worker to stop (bounded: 120 s) and return its last JSON line."""
    if proc.returncode is None and proc.stdin is not None:
        proc.stdin.write(b"stop\n")
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result
