"""The database edge: one async engine, SQLite or PostgreSQL, and Alembic on start.

* SQLite (aiosqlite): WAL, ``busy_timeout`` 30 s, foreign keys on. SQLAlchemy emits the
  ``BEGIN`` itself (the documented recipe: pysqlite's own BEGIN is disabled), and
  :meth:`Database.write` begins with ``BEGIN IMMEDIATE`` so two writers -- even in two OS
  processes -- queue on the write lock instead of failing with "database is locked".
* PostgreSQL (psycopg 3): a pool with ``pool_pre_ping``, so connections broken while the
  server was away are replaced and the service recovers by itself.

Connection failures are mapped here, once, to
:class:`~tokenkeep.errors.DatabaseUnavailableError` (the URL's password never appears).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time as _time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tokenkeep.clock import Clock
from tokenkeep.errors import DatabaseUnavailableError

__all__ = ["Database", "is_unavailable", "migrations_path", "rowcount"]

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Arbitrary constant key for pg_advisory_xact_lock: "tokenkeep" in ASCII, truncated to int64.
_PG_MIGRATION_LOCK = 0x746F6B656E6B65
# Connection-level failures only. IntegrityError and friends are bugs or conflicts, not
# "the database is away", and are left for the repositories to map.
_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    ConnectionError,
)


def is_unavailable(exc: BaseException) -> bool:
    """Is ``exc`` a connection-level driver failure ("the database is away")?"""
    return isinstance(exc, _UNAVAILABLE)


def migrations_path() -> Path:
    """Where the Alembic scripts live inside the installed package (works from a wheel)."""
    return Path(str(resources.files("tokenkeep.store") / "migrations"))


def rowcount(result: object) -> int:
    """How many rows an UPDATE or DELETE hit (SQLAlchemy's ``CursorResult.rowcount``).

    ``Session.execute`` is typed to return a plain ``Result``; the DML statements the
    repositories run return a ``CursorResult``, whose count this reads (0 when absent).
    """
    return int(getattr(result, "rowcount", 0) or 0)


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    return cfg


class Database:
    """The async engine and the sessions tokenkeep uses.

    ``url`` is ``sqlite+aiosqlite:///path`` or ``postgresql+psycopg://user@host/db``.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        blocking_pool_size: int = 8,
    ) -> None:
        self.clock = clock
        self._blocking_pool_size = blocking_pool_size
        self._url = make_url(url)
        self.safe_url = self._url.render_as_string(hide_password=True)
        self._password = self._url.password
        self.is_sqlite = self._url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            self._prepare_sqlite_path()
            self.engine: AsyncEngine = create_async_engine(
                self._url,
                pool_size=pool_size,
                max_overflow=pool_size,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            )
            _install_sqlite_hooks(self.engine)
        else:
            self.engine = create_async_engine(
                self._url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                pool_timeout=connect_timeout * 2,
                connect_args={"connect_timeout": max(1, round(connect_timeout))},
            )
        # Writes: on SQLite the "begin" hook reads this option and emits BEGIN IMMEDIATE.
        self._write_engine = self.engine.execution_options(tokenkeep_write=True)
        self._connect_timeout = connect_timeout
        self._blocking: Engine | None = None
        self._blocking_lock = threading.Lock()
        self._read_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = async_sessionmaker(self._write_engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.safe_url!r})"

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._url.get_backend_name()

    def _prepare_sqlite_path(self) -> None:
        database = self._url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self.unavailable(exc) from None
            # Switch the file to WAL once, here, from a connection that holds no lock.
            # Doing it in every pool connection's "connect" hook races on a fresh file:
            # a connection converting the journal while another holds a write lock can
            # wait out the whole busy timeout and fail with "database is locked".
            # (journal_mode=WAL is persistent: later connections inherit it.)
            try:
                with closing(
                    sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
                ) as conn:
                    conn.execute("PRAGMA journal_mode = WAL")
            except (sqlite3.Error, OSError) as exc:
                raise self.unavailable(exc) from None

    # -- sessions -------------------------------------------------------------------------
    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reads (rolled back at the end; never holds the SQLite write lock)."""
        try:
            async with self._read_sessions() as session:
                yield session
        except _UNAVAILABLE as exc:
            raise self.unavailable(exc) from None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: commit on success, rollback on any error."""
        try:
            async with self._write_sessions() as session, session.begin():
                yield session
        except _UNAVAILABLE as exc:
            raise self.unavailable(exc) from None

    def blocking_engine(self) -> Engine:
        """A small synchronous engine (same database, its own connections) for work that
        must not wait for the event loop: the lease heartbeat's thread. Thread-safe.

        Its pool keeps up to ``blocking_pool_size`` connections (opened on demand): one
        per lease taken at the same time (the scheduler runs ``scheduler_concurrency``
        refreshes at once). A smaller pool opened and closed a PostgreSQL connection for
        most leases, which was most of the scheduler's cost."""
        with self._blocking_lock:
            if self._blocking is None:
                if self.is_sqlite:
                    url = self._url.set(drivername="sqlite+pysqlite")
                    args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
                else:
                    url = self._url.set(drivername="postgresql+psycopg")
                    args = {"connect_timeout": max(1, round(self._connect_timeout))}
                self._blocking = create_engine(
                    url,
                    pool_size=self._blocking_pool_size,
                    max_overflow=self._blocking_pool_size,
                    pool_pre_ping=True,
                    connect_args=args,
                )
            return self._blocking

    def libpq_url(self) -> str:
        """The database as a plain libpq URL (PostgreSQL: for a dedicated LISTEN
        connection). Holds the password: never log it."""
        return self._url.set(drivername="postgresql").render_as_string(hide_password=False)

    def unavailable(self, exc: BaseException) -> DatabaseUnavailableError:
        """The one mapping of a driver failure to :class:`DatabaseUnavailableError`."""
        orig = getattr(exc, "orig", None) or exc
        reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        if self._password:
            reason = reason.replace(self._password, "***")
        reason = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", reason)
        return DatabaseUnavailableError(
            f"the database ({self.safe_url}) is unavailable: {reason}",
            details={"engine": self.dialect},
        )

    async def _run(self, fn: Callable[[SyncConnection], T], *, write: bool) -> T:
        engine = self._write_engine if write else self.engine
        try:
            async with engine.connect() as conn:
                result = await conn.run_sync(fn)
                await conn.commit()
                return result
        except _UNAVAILABLE as exc:
            raise self.unavailable(exc) from None

    # -- health and schema ------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise :class:`DatabaseUnavailableError` unless a trivial query succeeds."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except _UNAVAILABLE as exc:
            raise self.unavailable(exc) from None

    async def clock_correction(self, clock: Clock) -> float:
        """Seconds to add to ``clock`` to read the database's time: the PostgreSQL server's
        ``clock_timestamp()`` (SQLite: this host's system clock, the file's), against the
        middle of the round trip. Raises :class:`DatabaseUnavailableError`."""
        if self.is_sqlite:
            return _time.time() - clock.time()
        before = clock.time()
        try:
            async with self.engine.connect() as conn:
                query = text("SELECT extract(epoch FROM clock_timestamp())")
                server = float((await conn.execute(query)).scalar_one())
        except _UNAVAILABLE as exc:
            raise self.unavailable(exc) from None
        return server - (before + clock.time()) / 2

    async def upgrade(self) -> None:
        """Apply the Alembic migrations up to head.

        Safe when several processes start at once: PostgreSQL takes a transaction-scoped
        advisory lock; SQLite runs the migration in a ``BEGIN IMMEDIATE`` transaction, so
        the second process waits, then finds the schema at head and does nothing.
        """
        cfg = _alembic_config()

        def _upgrade(conn: SyncConnection) -> None:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            else:
                # Start the IMMEDIATE transaction now, before Alembic reads the version.
                conn.execute(text("SELECT 1"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

        await self._run(_upgrade, write=True)

    async def current_revision(self) -> str | None:
        """The schema revision stored in the database (``None`` before the first upgrade)."""

        def _current(conn: SyncConnection) -> str | None:
            return MigrationContext.configure(conn).get_current_revision()

        return await self._run(_current, write=False)

    @staticmethod
    def head_revision() -> str | None:
        """The newest revision shipped with this version of tokenkeep."""
        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    async def schema_is_current(self) -> bool:
        """True when the database is migrated to this version's head (for ``/readyz``)."""
        return await self.current_revision() == self.head_revision()

    async def close(self) -> None:
        """Close every pooled connection."""
        with self._blocking_lock:
            blocking, self._blocking = self._blocking, None
        if blocking is not None:
            blocking.dispose()
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite (it would otherwise BEGIN DEFERRED
        # lazily and never IMMEDIATE); SQLAlchemy emits BEGIN in _on_begin below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: SyncConnection) -> None:
        # A write transaction takes the write lock up front: a deferred BEGIN that later
        # upgrades to a writer can fail with SQLITE_BUSY without waiting for busy_timeout.
        if conn.get_execution_options().get("tokenkeep_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")
