"""The write pause of every gateway: ONE state per org, kept in the database (``org_state``).

Same states and verdicts as the in-process :class:`~tokenkeep.orgs.write_pause.WritePause`
(open → paused → one probe → open), but held in ``org_state`` so that when any gateway
learns an org is in maintenance, every other one refuses that org's writes too:

* **pause**: the first ``INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE`` sets
  ``pause_started_at`` and ``writes_paused_until`` (the next probe time) with a
  compare-and-set (``WHERE pause_started_at IS NULL``) and adds ``org.maintenance_started``
  to the outbox in the same transaction: one event per episode, whoever saw it first;
* **probe**: once ``writes_paused_until`` has passed, ONE write of all gateways is let
  through: the claim is a compare-and-set on ``pause_probe_owner`` / ``pause_probe_until``
  (a claim that never reports back expires after ``probe_seconds`` + the upstream timeout);
* **resume**: the probe's owner clears the pause (``WHERE pause_probe_owner = me``) with
  ``org.maintenance_ended`` in the same transaction; maintenance again (or an inconclusive
  answer) moves ``writes_paused_until`` one interval on.

The hot path stays synchronous and O(1): :meth:`SharedWritePause.admit` reads an in-process
view of the paused orgs, re-read from the database every ``write_pause_poll_seconds``
(0.5 s) by a background task, and updated at once by this process's own transitions. The
trade-off: for up to one poll interval after another gateway paused an org, this one may
still send that org's writes upstream (each fails with the maintenance error, which also
pauses it here at once); for up to one interval after another gateway resumed, this one
still answers 503 (the client's ``Retry-After`` covers it). No database read per call.

This process's own changes win over a poll until the database has them: a transition
changes the view before its first await and its row commits a few ms later, so a poll
that read the row in between would put the old state back for a whole interval (a local
pause wiped: a write let through during maintenance; or a resumed org paused again). So
the view of an org keeps this process's value while a transition of it is in flight, and
a poll whose read began before that transition finished is not taken for that org; the
next poll is (``tests/reliability/test_write_pause_race.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from secrets import token_hex
from typing import Any

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.observability.logging import get_logger
from tokenkeep.observability.metrics import Metrics
from tokenkeep.orgs.write_pause import Admission, Outcome
from tokenkeep.periodic import Periodic
from tokenkeep.store import Store
from tokenkeep.store.org_state import ProbeClaim
from tokenkeep.store.records import OrgState
from tokenkeep.vocabulary import Cause, EventType, is_write

__all__ = ["SharedWritePause"]

_log = get_logger("tokenkeep.orgs.write_pause")
_ORG_KEY_MAX = 64  # org_state.org_id


@dataclass(frozen=True, slots=True)
class _Held:
    """One paused org as this process last saw it (epoch seconds on our clock)."""

    started_at: float
    next_probe_at: float
    probe_until: float | None  # a probe claim of some gateway, until then

    @classmethod
    def of(cls, state: OrgState) -> _Held | None:
        if state.pause_started_at is None:
            return None
        until = state.pause_probe_until if state.pause_probe_owner is not None else None
        next_probe = state.writes_paused_until or state.pause_started_at
        return cls(
            state.pause_started_at.timestamp(),
            next_probe.timestamp(),
            until.timestamp() if until is not None else None,
        )


def default_owner() -> str:
    """This process's probe-claim name: host, pid and a random tag."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{token_hex(4)}"


class SharedWritePause:
    """The write pause shared by every gateway through the database (module docstring)."""

    def __init__(self, settings: Settings, clock: Clock, *, owner: str | None = None) -> None:
        self._clock = clock
        self.metrics: Metrics | None = None  # counts the pauses this gateway starts
        self._probe_seconds = settings.write_pause_probe_seconds
        self._probe_timeout = settings.write_pause_probe_seconds + settings.upstream_timeout_seconds
        self.owner = owner or default_owner()
        self._store: Store | None = None
        self._view: dict[str, _Held] = {}
        self._probing: dict[str, float] = {}  # org -> until: this process's probe attempt
        # org -> the sequence number of this process's last change to its view of the org
        # (or the end of its last transition): a poll whose read started before it does not
        # overwrite the org. org -> transitions of it whose database write is in flight.
        self._changed: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._seq = 0
        self._poll = Periodic("write-pause-poll", settings.write_pause_poll_seconds, self.refresh)

    # -- service ---------------------------------------------------------------------------

    def attach(self, store: Store | None) -> None:
        """Use ``store`` (the gateway's, once started; ``None`` detaches)."""
        self._store = store
        if store is None:
            self._view, self._probing, self._changed, self._in_flight = {}, {}, {}, {}

    async def start(self) -> None:
        """Read the paused orgs once, then keep re-reading them in the background."""
        try:
            await self.refresh()
        except Exception as exc:
            _log.warning("write_pause.refresh_failed", error=repr(exc))
        self._poll.start()

    async def stop(self) -> None:
        await self._poll.stop()

    async def refresh(self) -> None:
        """Re-read every paused org from the database (the background poll's step)."""
        store = self._store
        if store is None:
            return
        started = self._seq
        states = await store.orgs.paused()
        view: dict[str, _Held] = {}
        for state in states:
            held = _Held.of(state)
            if held is not None:
                view[state.org_id] = held
        current = self._view
        for org, changed in list(self._changed.items()):
            if changed <= started and org not in self._in_flight:
                del self._changed[org]  # the read began after our last change had committed
            elif org in current:
                view[org] = current[org]  # changed here while the poll was reading
            else:
                view.pop(org, None)
        self._view = view

    # -- the gate (WritePauseGate) ---------------------------------------------------------

    def admit(self, org_key: str, method: str) -> Admission:
        """May this request go upstream? O(1), no I/O: a look-up in the polled view."""
        view = self._view
        if not view or not is_write(method):
            return Admission.ALLOW
        held = view.get(org_key)
        if held is None:
            return Admission.ALLOW
        now = self._clock.time()
        mine = self._probing.get(org_key)
        if mine is not None:
            if now < mine:
                return Admission.REJECT  # this process is already probing
            del self._probing[org_key]  # that probe never reported back
        if now >= held.next_probe_at and (held.probe_until is None or now >= held.probe_until):
            self._probing[org_key] = now + self._probe_timeout
            return Admission.PROBE  # claim_probe asks every other gateway
        return Admission.REJECT

    async def claim_probe(self, org_key: str) -> Admission:
        """Claim the probe across every gateway: PROBE (ours), REJECT (someone else's, or
        not due), or ALLOW (the pause has ended meanwhile)."""
        store = self._store
        if store is None:
            self._probing.pop(org_key, None)
            return Admission.REJECT
        now = self._clock.now()
        until = now + timedelta(seconds=self._probe_timeout)
        try:
            claim, state = await store.orgs.claim_probe(org_key, self.owner, now=now, until=until)
        except Exception as exc:  # the database away: stay paused, try again later
            self._probing.pop(org_key, None)
            _log.warning("write_pause.claim_failed", org_id=org_key, error=repr(exc))
            return Admission.REJECT
        self._set(org_key, state)
        if claim is ProbeClaim.CLAIMED:
            return Admission.PROBE
        self._probing.pop(org_key, None)
        return Admission.ALLOW if claim is ProbeClaim.NOT_PAUSED else Admission.REJECT

    def retry_after(self, org_key: str) -> int:
        """Whole seconds until the next probe may run (at least 1)."""
        held = self._view.get(org_key)
        if held is None:
            return 1
        now = self._clock.time()
        wait = held.next_probe_at - now
        probing = org_key in self._probing or (
            held.probe_until is not None and held.probe_until > now
        )
        if probing:
            wait = max(wait, self._probe_seconds)
        return max(1, math.ceil(wait))

    def is_paused(self, org_key: str) -> bool:
        """Are this org's writes paused (as of the last poll or local change)?"""
        return org_key in self._view

    def paused_since(self, org_key: str) -> float | None:
        """When the org's pause began (epoch seconds), if it is paused."""
        held = self._view.get(org_key)
        return held.started_at if held is not None else None

    async def record(
        self,
        org_key: str,
        admission: Admission,
        outcome: Outcome,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Feed back what upstream answered to an admitted write (never raises)."""
        store = self._store
        if store is None or len(org_key) > _ORG_KEY_MAX:
            return
        try:
            with self._transition(org_key):
                if admission is Admission.PROBE:
                    self._probing.pop(org_key, None)
                    await self._finish_probe(store, org_key, outcome, details or {})
                elif outcome is Outcome.MAINTENANCE and org_key not in self._view:
                    await self._start(store, org_key, details or {})
        except Exception as exc:  # the database down must not fail a proxied call
            _log.error("write_pause.record_failed", org_id=org_key, error=repr(exc))

    # -- transitions -----------------------------------------------------------------------

    async def _start(self, store: Store, org_key: str, details: dict[str, Any]) -> None:
        now = self._clock.now()
        next_probe = now + timedelta(seconds=self._probe_seconds)
        # Paused here at once, before the first await: the client may send its next write
        # as soon as it has read this answer, before the database has the pause.
        self._set_held(org_key, _Held(now.timestamp(), next_probe.timestamp(), None))
        payload = {"probe_seconds": self._probe_seconds, **details}
        async with store.db.write() as session:
            started = await store.orgs.start_pause(
                session, org_key, now=now, next_probe_at=next_probe
            )
            if started:
                store.outbox.add_event(
                    session, EventType.ORG_MAINTENANCE_STARTED, payload=payload, org_id=org_key
                )
                await store.operations.log(
                    "write_pause_started",
                    outcome="paused",
                    org_id=org_key,
                    cause=Cause.MAINTENANCE,
                    detail=payload,
                    session=session,
                )
        if started:
            if self.metrics is not None:
                self.metrics.write_pauses.inc()
            _log.info(EventType.ORG_MAINTENANCE_STARTED, org_id=org_key, **payload)
        else:  # another gateway paused it first: take its state
            self._set(org_key, await store.orgs.get(org_key))

    async def _finish_probe(
        self, store: Store, org_key: str, outcome: Outcome, details: dict[str, Any]
    ) -> None:
        # The local view changes before the first await (see _start); the database follows.
        if outcome is Outcome.SUCCESS:
            await self._end(store, org_key, details)
            return
        held = self._view.get(org_key)
        if outcome is Outcome.ABANDONED:  # the client went away: free the slot at once
            if held is not None:
                self._set_held(org_key, _Held(held.started_at, held.next_probe_at, None))
            await store.orgs.release_probe(
                org_key, self.owner, next_probe_at=None, outcome="abandoned"
            )
            return
        next_probe = self._clock.now() + timedelta(seconds=self._probe_seconds)
        started = held.started_at if held is not None else self._clock.time()
        self._set_held(org_key, _Held(started, next_probe.timestamp(), None))
        await store.orgs.release_probe(
            org_key, self.owner, next_probe_at=next_probe, outcome=outcome.value, detail=details
        )

    async def _end(self, store: Store, org_key: str, details: dict[str, Any]) -> None:
        now = self._clock.now()
        self._set_held(org_key, None)  # writes flow here at once
        state = await store.orgs.get(org_key)
        since = state.pause_started_at if state is not None else None
        probes = await store.orgs.probes_since(org_key, since) + 1 if since is not None else 1
        async with store.db.write() as session:
            before = await store.orgs.end_pause(session, org_key, self.owner, now=now)
            if before is not None and before.pause_started_at is not None:
                payload = {
                    "paused_seconds": round((now - before.pause_started_at).total_seconds(), 3),
                    "probes": probes,
                }
                await store.orgs.log_probe(session, org_key, "success", details)
                store.outbox.add_event(
                    session, EventType.ORG_MAINTENANCE_ENDED, payload=payload, org_id=org_key
                )
                await store.operations.log(
                    "write_pause_ended",
                    outcome="resumed",
                    org_id=org_key,
                    detail=payload,
                    session=session,
                )
        if before is not None:
            _log.info(EventType.ORG_MAINTENANCE_ENDED, org_id=org_key, probes=probes)
        else:  # we no longer held the probe (it expired): the database decides
            self._set(org_key, await store.orgs.get(org_key))

    # -- the view --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transition(self, org_key: str) -> Iterator[None]:
        """While the block runs, polls keep this process's view of the org; at its end the
        change counts as new again, so a poll whose read began before the commit is
        ignored for the org too."""
        self._in_flight[org_key] = self._in_flight.get(org_key, 0) + 1
        try:
            yield
        finally:
            left = self._in_flight[org_key] - 1
            if left:
                self._in_flight[org_key] = left
            else:
                del self._in_flight[org_key]
            self._touch(org_key)

    def _set(self, org_key: str, state: OrgState | None) -> None:
        self._set_held(org_key, _Held.of(state) if state is not None else None)

    def _set_held(self, org_key: str, held: _Held | None) -> None:
        view = dict(self._view)
        if held is None:
            view.pop(org_key, None)
        else:
            view[org_key] = held
        self._view = view
        self._touch(org_key)

    def _touch(self, org_key: str) -> None:
        self._seq += 1
        self._changed[org_key] = self._seq
