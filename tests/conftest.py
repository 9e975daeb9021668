"""Shared fixtures: the store on both engines.

``db_url`` is parametrized over ``sqlite`` and ``postgresql``. The PostgreSQL variant
creates a uniquely named database on ``postgresql+psycopg://postgres@127.0.0.1:5432/`` and
drops it (``WITH (FORCE)``) afterwards. An unreachable PostgreSQL skips those tests, except
under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import structlog

from tokenkeep.clock import ManualClock
from tokenkeep.config import Settings, load_settings
from tokenkeep.crypto import Keyring
from tokenkeep.store import Database, Store, verify_keyring

PG_ADMIN_DSN = os.environ.get(
    "TOKENKEEP_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """Undo any ``configure_logging`` a test did (directly, or through a CLI command).

    ``configure_logging`` binds structlog and the root logger to the stream of that moment;
    under ``CliRunner`` that stream is closed when the command returns, and every later test
    in the same worker would log into a closed file (``ValueError`` inside the code under
    test, or nothing to capture).
    """
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    root.handlers[:] = []
    root.setLevel(logging.WARNING)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean ``TOKENKEEP_*`` environment with its data dir in ``tmp_path`` (CLI tests)."""
    for name in list(os.environ):
        if name.startswith("TOKENKEEP_") and name != "TOKENKEEP_TEST_PG_DSN":
            monkeypatch.delenv(name)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("TOKENKEEP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TOKENKEEP_LOG_LEVEL", "WARNING")
    return data_dir


def _pg_admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required under CI=true but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_DSN}: {exc}")


@pytest.fixture
def pg_admin_dsn() -> str:
    """libpq DSN of the PostgreSQL maintenance database the fixtures administer."""
    return PG_ADMIN_DSN


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (``postgresql+psycopg://...``), dropped after."""
    name = "tk_test_" + secrets.token_hex(6)
    with _pg_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's URL on each engine: a SQLite file in ``tmp_path`` or a fresh PG database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'tokenkeep.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when the test says so (starts 2026-01-01T00:00:00Z)."""
    return ManualClock()


@pytest.fixture
def keyring() -> Keyring:
    """A keyring with one fresh key, ``k1``."""
    return Keyring.generate("k1")


@pytest.fixture
def store_settings(db_url: str, tmp_path: Path, keyring: Keyring) -> Settings:
    """Settings pointing at ``db_url``, a data dir in ``tmp_path`` and the ``keyring``."""
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        encryption_keys=keyring.export().reveal(),
        secret_key=None,
    )


@pytest.fixture
async def database(db_url: str, clock: ManualClock) -> AsyncIterator[Database]:
    """A migrated :class:`Database` on each engine."""
    db = Database(db_url, clock=clock)
    await db.upgrade()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def store(database: Database, keyring: Keyring, clock: ManualClock) -> Store:
    """A ready :class:`Store` (migrated, keyring checked) on each engine."""
    await verify_keyring(database, keyring)
    return Store(db=database, keyring=keyring, clock=clock)


@pytest.fixture(params=["aiohttp", "pyreqwest"])
def upstream_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each of the proxy's upstream clients in turn (``TOKENKEEP_UPSTREAM_CLIENT``, read by
    every ``load_settings`` of the test): the proxy's behaviour tests hold for both."""
    monkeypatch.setenv("TOKENKEEP_UPSTREAM_CLIENT", request.param)
    return str(request.param)
