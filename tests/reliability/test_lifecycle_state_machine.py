"""A Hypothesis state machine over a connection's whole life, against the emulator.

Rules: connect (authorization code through the emulator), import (tokens an app already
holds), refresh (forced), revoke (the emulator revokes the grant, as Setup's "Revoke" or
the user does), rotate the encryption key, call (``fresh_token``: what the proxy and ``GET
/connections/{id}/token`` hand out), time passing (sessions expire), and restart (store and
coordinator closed and reopened on the same database, keys carried over).

Invariants, after every step:

* the stored refresh token of every connection is the newest its family was issued (never
  an older, rotated-out one);
* ``needs_reauth`` only for a connection whose grant the emulator revoked, with a
  ``revoked:*`` reason other than ``rotation_lost``;
* a token handed out belongs (at the emulator) to the org the connection is of, and names
  that org's instance host as its destination -- two orgs on two instance hosts, so a token
  addressed to the other host would be caught; a token handed out while its grant is live
  is live at the emulator.

One event loop per machine (``asyncio.Runner``) runs the async code inside the rules.
SQLite (25 examples) and PostgreSQL (15, a database each), up to 20 steps each: bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from tests.lifecycle.lifecycle_support import (
    INTEGRATION,
    connect,
    register_integration,
    settings_for,
)

from tokenkeep.clock import ManualClock
from tokenkeep.crypto import Keyring, new_key_bytes, new_key_id
from tokenkeep.emulator import Emulator
from tokenkeep.emulator.models import Family
from tokenkeep.errors import NeedsReauthError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.imports import ConnectionToImport, create_imported_connection
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.models import oauth_app_for
from tokenkeep.oauth.session import create_session
from tokenkeep.observability.logging import configure_logging
from tokenkeep.store import Database, Store, rotate_keys, verify_keyring

PG_ADMIN_DSN = os.environ.get(
    "TOKENKEEP_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RUNS = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class ConnectionLife(RuleBasedStateMachine):
    """One gateway (store + coordinator) and one emulator (2 orgs) on a shared fake clock."""

    engine = "sqlite"
    connections = Bundle("connections")

    def __init__(self) -> None:
        super().__init__()
        configure_logging("console", "WARNING")
        self.runner = asyncio.Runner()
        self.stack = contextlib.AsyncExitStack()
        self.clock = ManualClock()
        self.families: dict[str, Family] = {}  # connection id -> its grant at the emulator
        self.org_of: dict[str, str] = {}
        self.revoked: set[str] = set()  # connections whose grant the emulator revoked
        self.count = 0
        self.keyring = Keyring.generate("k1")
        self.tmp = tempfile.TemporaryDirectory()
        self.pg_name: str | None = None
        self.db_url = self._database()
        self.runner.run(self._start())

    def _database(self) -> str:
        if self.engine == "sqlite":
            return f"sqlite+aiosqlite:///{Path(self.tmp.name) / 'tokenkeep.db'}"
        self.pg_name = "tk_sm_" + secrets.token_hex(6)
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f'CREATE DATABASE "{self.pg_name}"')
        base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        return f"{base}/{self.pg_name}"

    async def _start(self) -> None:
        self.emu = await self.stack.enter_async_context(Emulator.running(orgs=2, clock=self.clock))
        app = self.emu.app_config.client_id
        self.emu.admin.patch_app(app, {"rotate_refresh_tokens": True, "max_approvals": 1000})
        session = create_session(timeout_seconds=20)
        self.stack.push_async_callback(session.close)
        self.client = TokenEndpointClient(session, clock=self.clock)
        self.settings = settings_for(self.db_url, data_dir=Path(self.tmp.name) / "data")
        await self._open()
        await register_integration(self.store, self.emu)

    async def _open(self) -> None:
        db = Database(self.db_url, clock=self.clock)
        await db.upgrade()
        keyring = Keyring.parse(self.keyring.export().reveal())  # what a new process loads
        await verify_keyring(db, keyring)
        self.keyring = keyring
        self.store = Store(db=db, keyring=keyring, clock=self.clock)
        self.coordinator = RefreshCoordinator(
            self.store, self.client, settings=self.settings, clock=self.clock
        )

    def teardown(self) -> None:
        try:
            self.runner.run(self.store.db.close())
            self.runner.run(self.stack.aclose())
        finally:
            self.runner.close()
            self.tmp.cleanup()
            if self.pg_name is not None:
                with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')

    def run(self, coro: Any) -> Any:
        return self.runner.run(asyncio.wait_for(coro, 30))

    def _adopt(self, cid: str, refresh_token: str) -> str:
        family = self.emu.state.refresh_index[refresh_token]
        self.families[cid] = family
        self.org_of[cid] = family.user.org_id
        return cid

    # -- rules ----------------------------------------------------------------------------
    @initialize(target=connections, org=st.integers(0, 1))
    def first_connection(self, org: int) -> str:
        return self.connect(org)

    @rule(target=connections, org=st.integers(0, 1))
    def connect(self, org: int) -> str:
        self.count += 1
        cid = f"c{self.count}"
        user = self.emu.orgs[org].users[self.count % len(self.emu.orgs[org].users)]
        conn = self.run(connect(self.store, self.emu, self.client, user, cid, clock=self.clock))
        stored = self.run(self.store.connections.get(conn.id, with_credentials=True))
        return self._adopt(cid, stored.credentials.refresh_token.reveal())

    @rule(target=connections, org=st.integers(0, 1))
    def import_connection(self, org: int) -> str:
        self.count += 1
        cid = f"i{self.count}"
        user = self.emu.orgs[org].users[self.count % len(self.emu.orgs[org].users)]

        async def go() -> str:
            integration = await self.store.integrations.get(INTEGRATION, with_secrets=True)
            redirect = self.emu.app_config.redirect_uris[0]
            code = self.emu.admin.authorize(
                client_id=integration.client_id, username=user.username, redirect_uri=redirect
            )["code"]
            tokens = await self.client.exchange_code(oauth_app_for(integration), code, redirect)
            assert tokens.refresh_token is not None
            await create_imported_connection(
                self.store,
                self.settings,
                ConnectionToImport(
                    integration=INTEGRATION,
                    access_token=tokens.access_token,
                    instance_url=tokens.instance_url,
                    refresh_token=tokens.refresh_token,
                    id_url=tokens.id_url,
                    issued_at=tokens.issued_at_ms,
                    connection_id=cid,
                ),
            )
            return tokens.refresh_token.reveal()

        return self._adopt(cid, self.run(go()))

    @rule(cid=connections)
    def refresh(self, cid: str) -> None:
        token = self._token_or_reauth(cid, self.coordinator.refresh(cid))
        assert token is None or cid not in self.revoked, f"{cid}: refreshed on a revoked grant"

    @rule(cid=connections)
    def call(self, cid: str) -> None:
        self._token_or_reauth(cid, self.coordinator.fresh_token(cid))

    @rule(cid=connections)
    def revoke(self, cid: str) -> None:
        family = self.families[cid]
        assert family.refresh_token is not None
        assert self.emu.state.revoke_token(family.refresh_token)
        self.revoked.add(cid)

    @rule()
    def rotate_key(self) -> None:
        result = self.run(rotate_keys(self.store.db, self.keyring, new_key_id(), new_key_bytes()))
        assert result.rows_remaining == 0

    @rule(seconds=st.integers(60, 7200))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def restart(self) -> None:
        self.run(self.store.db.close())
        self.run(self._open())

    # -- checks ---------------------------------------------------------------------------
    def _token_or_reauth(self, cid: str, getting: Any) -> FreshToken | None:
        """The token ``getting`` hands out (checked), or None on ``NeedsReauthError``,
        which only a revoked grant may answer."""
        try:
            token: FreshToken = self.run(getting)
        except NeedsReauthError:
            assert cid in self.revoked, f"{cid}: needs_reauth without a revocation"
            return None
        self._check_handed_out(cid, token)
        return token

    def _check_handed_out(self, cid: str, token: FreshToken) -> None:
        """No await since the token was handed out: the emulator's view of this instant."""
        at = self.emu.state.access.get(token.access_token.reveal())
        assert at is not None, f"{cid}: a token the emulator never issued"
        assert at.family is self.families[cid], f"{cid}: a token of another grant"
        org = self.emu.state.orgs_by_id[self.org_of[cid]]
        assert at.family.user.org_id == org.org_id
        assert token.instance_url == org.instance_url, (
            f"{cid}: token addressed to {token.instance_url}, its org is at {org.instance_url}"
        )
        if not at.family.revoked:
            assert self.emu.state.live(at.token) is not None, f"{cid}: expired token handed out"

    @invariant()
    def stored_refresh_token_is_the_newest(self) -> None:
        for cid, family in self.families.items():
            stored = self.run(self.store.connections.get(cid, with_credentials=True))
            assert stored.credentials is not None
            assert stored.credentials.refresh_token is not None
            newest = stored.credentials.refresh_token.reveal() == family.refresh_token
            assert newest, f"{cid}: the stored refresh token is not the newest of its family"

    @invariant()
    def needs_reauth_only_after_a_revocation(self) -> None:
        for cid in self.families:
            stored = self.run(self.store.connections.get(cid))
            if stored.status != "active":
                assert cid in self.revoked, f"{cid}: {stored.status} {stored.status_reason}"
                assert stored.status == "needs_reauth"
                assert stored.status_reason is not None
                assert stored.status_reason.startswith("revoked:")
                assert stored.status_reason != "revoked:rotation_lost"


class ConnectionLifeOnPostgres(ConnectionLife):
    engine = "postgresql"


def _postgres_reachable() -> bool:
    try:
        psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3).close()
    except psycopg.OperationalError:
        return os.environ.get("CI", "").lower() == "true"  # under CI: run, and fail
    return True


@pytest.mark.slow
def test_connection_life_on_sqlite() -> None:
    ConnectionLife.TestCase.settings = RUNS
    ConnectionLife.TestCase().runTest()


@pytest.mark.slow
@pytest.mark.skipif(not _postgres_reachable(), reason="PostgreSQL unreachable")
def test_connection_life_on_postgresql() -> None:
    ConnectionLifeOnPostgres.TestCase.settings = settings(RUNS, max_examples=15)
    ConnectionLifeOnPostgres.TestCase().runTest()
