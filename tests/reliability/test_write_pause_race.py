"""The shared write pause's view survives a poll that reads the database before this
process's own change has committed (src/tokenkeep/orgs/shared_pause.py; found by the demo).

A pause (or a resume) changes this process's view at once, and the ``org_state`` row
follows when its transaction commits, a few ms later. A background poll that *started*
after the local change but read the row before that commit used to put the old state back
until the next poll: a local pause wiped (a write let through during maintenance), or a
resumed org seen as paused again.

Deterministic: another connection holds the database's write lock (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: ``LOCK TABLE org_state IN EXCLUSIVE MODE``, which lets reads
through), so the transition's commit waits while the test runs the poll step itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import text

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.orgs.shared_pause import SharedWritePause
from tokenkeep.orgs.write_pause import Admission, Outcome
from tokenkeep.store import Database, Store

ORG = "00Dxx0000001gPLEAY"


@contextlib.asynccontextmanager
async def writes_blocked(db_url: str) -> AsyncIterator[None]:
    """Hold the database's write lock from another connection until the block ends."""
    other = Database(db_url, clock=ManualClock())
    try:
        async with other.write() as session:
            if other.is_sqlite:
                await session.execute(text("SELECT 1"))  # emits BEGIN IMMEDIATE
            else:
                await session.execute(text("LOCK TABLE org_state IN EXCLUSIVE MODE"))
            yield
    finally:
        await other.close()


def _pause(store: Store, clock: ManualClock, tmp_path: Path) -> SharedWritePause:
    pause = SharedWritePause(
        load_settings(data_dir=tmp_path, write_pause_probe_seconds=30.0), clock, owner="me"
    )
    pause.attach(store)  # not started: the test runs the poll step (refresh) itself
    return pause


async def _until(check: object, what: str) -> None:
    for _ in range(200):
        if callable(check) and check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(what)


async def test_a_poll_before_the_pause_commits_does_not_wipe_it(
    store: Store, clock: ManualClock, tmp_path: Path, db_url: str
) -> None:
    pause = _pause(store, clock, tmp_path)
    await pause.refresh()
    async with writes_blocked(db_url):
        started = asyncio.create_task(pause.record(ORG, Admission.ALLOW, Outcome.MAINTENANCE))
        await _until(lambda: pause.is_paused(ORG), "the pause is not seen locally at once")
        await pause.refresh()  # reads the row before the pause's commit: not paused there
        assert pause.is_paused(ORG)
        assert pause.admit(ORG, "POST") is Admission.REJECT
        await asyncio.sleep(0.05)
        assert not started.done()  # still waiting for the write lock
    await started
    state = await store.orgs.get(ORG)
    assert state is not None
    assert state.paused
    await pause.refresh()  # the database has caught up: its state is taken again
    assert pause.admit(ORG, "POST") is Admission.REJECT


async def test_a_poll_before_the_resume_commits_does_not_pause_again(
    store: Store, clock: ManualClock, tmp_path: Path, db_url: str
) -> None:
    pause = _pause(store, clock, tmp_path)
    await pause.record(ORG, Admission.ALLOW, Outcome.MAINTENANCE)
    await pause.refresh()
    clock.advance(31)
    assert pause.admit(ORG, "POST") is Admission.PROBE
    assert await pause.claim_probe(ORG) is Admission.PROBE
    async with writes_blocked(db_url):
        ended = asyncio.create_task(pause.record(ORG, Admission.PROBE, Outcome.SUCCESS))
        await _until(lambda: not pause.is_paused(ORG), "the resume is not seen locally at once")
        await pause.refresh()  # reads the row before the resume's commit: still paused there
        assert not pause.is_paused(ORG)
        assert pause.admit(ORG, "POST") is Admission.ALLOW
    await ended
    await pause.refresh()
    assert not pause.is_paused(ORG)
    state = await store.orgs.get(ORG)
    assert state is not None
    assert not state.paused


async def test_a_poll_after_the_commit_takes_another_gateways_change(
    store: Store, clock: ManualClock, tmp_path: Path
) -> None:
    """The guard is per change: once ours has committed, the database rules again."""
    mine, theirs = _pause(store, clock, tmp_path), _pause(store, clock, tmp_path)
    await mine.record(ORG, Admission.ALLOW, Outcome.MAINTENANCE)
    await theirs.refresh()
    assert theirs.is_paused(ORG)
    clock.advance(31)
    assert mine.admit(ORG, "POST") is Admission.PROBE
    assert await mine.claim_probe(ORG) is Admission.PROBE
    await mine.record(ORG, Admission.PROBE, Outcome.SUCCESS)
    await theirs.refresh()
    assert not theirs.is_paused(ORG)
