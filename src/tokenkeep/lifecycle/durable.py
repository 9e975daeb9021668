"""A token answer is committed, or kept until it can be: the commit of a refresh.

:class:`DurableCommit` is what :class:`~tokenkeep.lifecycle.refresh.Refresher` hands a
token answer to, under the lease. In order:

1. A rotating answer (a new refresh token: the only one that still works) is written to
   the :class:`~tokenkeep.lifecycle.journal.RefreshJournal` first -- synchronously, so
   nothing is awaited between the answer and a durable copy of it.
2. The compare-and-swap commit (:func:`~tokenkeep.lifecycle.persist.commit_refresh`).
3. If the database is away: the answer is journaled (if it was not yet) and the commit is
   retried, the lease kept (its heartbeat runs on its own thread), for
   ``TOKENKEEP_COMMIT_RETRY_SECONDS``. Giving up raises :class:`CommitPendingError`; the
   lease is then NOT released (the coordinator lets it expire) and the journal keeps the
   answer for the next refresh of the connection or the next start
   (:meth:`DurableCommit.replay_journal`). A rotating answer that could not be journaled
   either is remembered (``lost``): the next ``invalid_grant`` is a ``rotation_lost``,
   never a revocation.
4. Committed (or fenced off by a newer stored token): the journal entry is deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import DatabaseUnavailableError, NotFoundError
from tokenkeep.lifecycle.journal import JournalEntry, RefreshJournal
from tokenkeep.lifecycle.persist import CommitResult, commit_refresh
from tokenkeep.oauth.models import TokenResponse
from tokenkeep.observability.logging import get_logger
from tokenkeep.secret import Secret
from tokenkeep.store import Connection, Store
from tokenkeep.vocabulary import Status

__all__ = ["CommitPendingError", "DurableCommit", "JournalReplay"]

_log = get_logger("tokenkeep.lifecycle")
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 2.0


class CommitPendingError(DatabaseUnavailableError):
    """A token answer could not be stored within ``TOKENKEEP_COMMIT_RETRY_SECONDS``: it
    waits in the journal (or, if the disk refused too, it is lost and will be reported as
    ``rotation_lost``). The refresh lease is kept, to expire rather than be freed."""


class DurableCommit:
    """Commit a token answer, journaling and retrying it through a database outage."""

    def __init__(self, store: Store, *, settings: Settings, clock: Clock, owner: str) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner
        self.retry_seconds = settings.commit_retry_seconds
        self.lease_seconds = settings.refresh_lease_seconds
        self.allow_insecure_loopback = settings.allow_insecure_loopback
        self.journal = RefreshJournal(settings.data_dir, store.keyring, database=store.db.safe_url)
        # Connections whose rotated refresh token this process received and could neither
        # commit nor journal: their next invalid_grant is a lost rotation.
        self.lost: set[str] = set()
        self.journaled = 0  # answers written to the journal (tests, metrics)

    def pending(self, conn: Connection) -> JournalEntry | None:
        """A journaled answer for the row as read (``conn.version``); a stale one (the row
        moved on since) is deleted."""
        entry = self.journal.read(conn.id)
        if entry is None:
            return None
        if entry.read_version != conn.version:
            _log.info("stale refresh journal entry dropped", connection_id=conn.id)
            self.journal.discard(conn.id, entry.read_version)
            return None
        return entry

    async def commit(
        self,
        conn: Connection,
        response: TokenResponse,
        *,
        used: Secret | None,
        expires_at: datetime,
        next_refresh_at: datetime,
        grant: str,
        duration_ms: Callable[[], float],
        entry: JournalEntry | None = None,
        retry_seconds: float | None = None,
    ) -> CommitResult:
        """Store ``response`` on the row read at ``conn.version`` (see the module doc)."""

        def journal() -> JournalEntry | None:
            fresh = JournalEntry(
                connection_id=conn.id,
                read_version=conn.version,
                response=response,
                used_refresh_token=used,
                expires_at=expires_at,
                next_refresh_at=next_refresh_at,
                grant=grant,
                written_at=self.clock.time(),
            )
            try:
                self.journal.write(fresh)
            except OSError as exc:
                _log.error(
                    "could not journal a token answer", connection_id=conn.id, error=str(exc)
                )
                return None
            self.journaled += 1
            return fresh

        if entry is None and response.refresh_token is not None:
            entry = journal()  # the first thing after a rotating answer: nothing awaited

        async def attempt() -> CommitResult:
            return await asyncio.shield(
                commit_refresh(
                    self.store,
                    conn,
                    response,
                    used_refresh_token=used,
                    owner=self.owner,
                    expires_at=expires_at,
                    next_refresh_at=next_refresh_at,
                    duration_ms=duration_ms(),
                    grant=grant,
                    allow_insecure_loopback=self.allow_insecure_loopback,
                )
            )

        try:
            result = await attempt()
        except DatabaseUnavailableError as exc:
            if entry is None:
                entry = journal()  # before anything else
            rotating = response.refresh_token is not None
            result = await self._insist(
                conn,
                attempt,
                exc,
                kept=entry is not None,
                rotating=rotating,
                budget=self.retry_seconds if retry_seconds is None else retry_seconds,
            )
        self.lost.discard(conn.id)
        if entry is not None:
            self.journal.discard(conn.id, conn.version)
        return result

    async def _insist(
        self,
        conn: Connection,
        attempt: Callable[[], Awaitable[CommitResult]],
        error: DatabaseUnavailableError,
        *,
        kept: bool,
        rotating: bool,
        budget: float,
    ) -> CommitResult:
        # Real time (the loop's clock): an outage lasts seconds of the wall, whatever an
        # injected test clock says.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        pause = _FIRST_PAUSE
        tries = 1
        _log.error(
            "could not store a refreshed token; retrying under the lease",
            connection_id=conn.id,
            journaled=kept,
            retry_seconds=budget,
            error=str(error),
        )
        while (remaining := deadline - loop.time()) > 0:
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_PAUSE)
            tries += 1
            try:
                result = await attempt()
            except DatabaseUnavailableError as exc:
                error = exc
                continue
            _log.info("refreshed token stored after retries", connection_id=conn.id, tries=tries)
            return result
        if rotating and not kept:
            self.lost.add(conn.id)
        _log.error(
            "gave up storing a refreshed token" + ("; it waits in the journal" if kept else ""),
            connection_id=conn.id,
            tries=tries,
            journaled=kept,
        )
        raise CommitPendingError(
            f"connection {conn.id}: the database is unavailable; the refreshed token "
            + ("is kept in the journal and will be stored when it is back" if kept else "was lost"),
            details={"connection_id": conn.id, "journaled": kept},
        ) from error

    async def replay_journal(self) -> int:
        """Commit every journaled answer whose row still waits for it (at start, and
        whenever asked); returns how many were committed. An entry whose row moved on,
        is gone, or needs a human (its tokens were revoked meanwhile) is deleted; one whose
        row another worker is refreshing stays for that worker (it looks here first)."""
        replayed = 0
        for entry in self.journal.entries():
            cid = entry.connection_id
            try:
                conn = await self.store.connections.get(cid, with_credentials=True)
            except NotFoundError:
                self.journal.discard(cid, entry.read_version)
                continue
            if self._obsolete(conn, entry):
                continue
            # The lease keeps other workers from a token call meanwhile. If another holds it
            # (a dead process's lease not yet expired), the commit goes ahead anyway: the
            # stored refresh token was consumed by this answer, so no call can succeed on
            # it, and the compare-and-swap on ``version`` keeps the row right.
            await self.store.leases.acquire(
                cid, self.owner, now=self.clock.now(), seconds=self.lease_seconds
            )
            conn = await self.store.connections.get(cid, with_credentials=True)
            if self._obsolete(conn, entry):
                await self.store.leases.release(cid, self.owner)
                continue
            result = await self.commit(
                conn,
                entry.response,
                used=entry.used_refresh_token,
                expires_at=entry.expires_at,
                next_refresh_at=entry.next_refresh_at,
                grant=entry.grant,
                duration_ms=lambda: 0.0,
                entry=entry,
                retry_seconds=0.0,  # at start: never hold the gateway up; retried later
            )
            if result.committed:
                replayed += 1
                _log.warning("journaled refresh answer committed", connection_id=cid)
        return replayed

    def _obsolete(self, conn: Connection, entry: JournalEntry) -> bool:
        """Drop an entry the row no longer waits for (True: dropped)."""
        if conn.version == entry.read_version and conn.status not in (
            Status.NEEDS_REAUTH,
            Status.ACTION_REQUIRED,
        ):
            return False
        _log.warning(
            "refresh journal entry dropped: the row moved on",
            connection_id=conn.id,
            status=conn.status,
        )
        self.journal.discard(conn.id, entry.read_version)
        return True


class JournalReplay:
    """A gateway service: replay the journal once at start (a database still away is
    logged; every refresh of a journaled connection replays it anyway)."""

    def __init__(self, durable: DurableCommit) -> None:
        self._durable = durable

    async def start(self) -> None:
        try:
            replayed = await self._durable.replay_journal()
        except DatabaseUnavailableError as exc:
            _log.error("refresh journal not replayed: database unavailable", error=str(exc))
            return
        if replayed:
            _log.warning("refresh journal replayed", committed=replayed)

    async def stop(self) -> None:
        return None
