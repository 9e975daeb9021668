"""Per-org write pause during Salesforce maintenance: a small circuit breaker for writes.

This module holds the contract every pause keeps (:class:`WritePauseGate`: ``admit``,
``claim_probe``, ``record``, ``retry_after``, ``is_paused``) and :class:`WritePause`, the
in-process state machine (one process, no database: a proxy built without a gateway, and
the rules' reference). A running gateway uses
:class:`~tokenkeep.orgs.shared_pause.SharedWritePause`, the same states kept in the
database for every gateway.

States per org (keyed by ``org_id``, or by ``instance_url`` when the org is not known yet):

* **open for writes** (no entry): every request passes.
* **paused**: a write (POST/PATCH/PUT/DELETE) failed with
  ``INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE``. Writes answer
  ``503 org_write_paused`` with ``Retry-After`` and no upstream call; reads pass.
* **probing** (half-open): once ``probe_seconds`` have passed since the pause (or the last
  probe), ONE write is let through. Success (2xx/3xx) resumes writes; maintenance again keeps
  the pause for another interval; any other outcome (an unrelated error, a network failure)
  is inconclusive and also waits one interval. A probe whose request was abandoned (client
  gone) frees the slot at once. A probe that never reports back (a bug, a killed task)
  expires after ``probe_timeout_seconds``.

Transitions emit ``org.maintenance_started`` / ``org.maintenance_ended`` through the async
``on_event(type, org_id, payload)`` callback (the lifecycle layer writes them to the webhook
outbox). A failing callback is logged, never breaks the call.

The state is in-process, so the hot path reads no database: :meth:`WritePause.admit` is a
dict look-up. On its own, each process would pause on its own first maintenance error:
that is why the gateway uses the shared pause.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tokenkeep.clock import Clock
from tokenkeep.observability.logging import get_logger
from tokenkeep.vocabulary import EventType, is_write

__all__ = ["Admission", "EventCallback", "Outcome", "WritePause", "WritePauseGate"]

EventCallback = Callable[[str, str, dict[str, Any]], Awaitable[None]]

_log = get_logger("tokenkeep.orgs.write_pause")


class Admission(enum.Enum):
    """The verdict for one request before it goes upstream."""

    ALLOW = "allow"  # not paused, or a read
    PROBE = "probe"  # paused, but this write is the half-open probe
    REJECT = "reject"  # paused: answer 503 org_write_paused


class Outcome(enum.Enum):
    """What the upstream said to an admitted write."""

    SUCCESS = "success"
    MAINTENANCE = "maintenance"
    INCONCLUSIVE = "inconclusive"
    ABANDONED = "abandoned"


class WritePauseGate(Protocol):
    """What the proxy asks of a write pause (in-process or shared)."""

    def admit(self, org_key: str, method: str) -> Admission:
        """May this request go upstream? Synchronous and O(1): every proxied call asks."""

    async def claim_probe(self, org_key: str) -> Admission:
        """Confirm a :attr:`Admission.PROBE` verdict (the shared pause claims it for all
        gateways); returns the final verdict."""

    def retry_after(self, org_key: str) -> int:
        """Whole seconds until the next probe may run (at least 1)."""

    def is_paused(self, org_key: str) -> bool:
        """Are this org's writes paused?"""

    async def record(
        self,
        org_key: str,
        admission: Admission,
        outcome: Outcome,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Feed back what upstream answered to an admitted write."""


@dataclass(slots=True)
class _Pause:
    """The pause of one org (monotonic times)."""

    org_id: str
    paused_at: float
    next_probe_at: float
    probe_deadline: float | None = None  # set while a probe is in flight
    probes: int = 0


class WritePause:
    """In-process write-pause state machine for every org this process has seen."""

    def __init__(
        self,
        clock: Clock,
        probe_seconds: float,
        *,
        on_event: EventCallback | None = None,
        probe_timeout_seconds: float | None = None,
    ) -> None:
        self._clock = clock
        self._probe_seconds = probe_seconds
        self._probe_timeout = probe_timeout_seconds or max(60.0, probe_seconds * 2)
        self._on_event = on_event
        self._paused: dict[str, _Pause] = {}

    def admit(self, org_key: str, method: str) -> Admission:
        """May this request go upstream? O(1), no I/O: called on every proxied call."""
        if not self._paused or not is_write(method):
            return Admission.ALLOW
        state = self._paused.get(org_key)
        if state is None:
            return Admission.ALLOW
        now = self._clock.monotonic()
        if state.probe_deadline is not None and now >= state.probe_deadline:
            state.probe_deadline = None  # the last probe never reported back
        if state.probe_deadline is None and now >= state.next_probe_at:
            state.probe_deadline = now + self._probe_timeout
            state.probes += 1
            return Admission.PROBE
        return Admission.REJECT

    async def claim_probe(self, org_key: str) -> Admission:
        """In one process :meth:`admit` has already taken the only probe slot."""
        return Admission.PROBE

    def retry_after(self, org_key: str) -> int:
        """Whole seconds until the next probe may run (at least 1)."""
        state = self._paused.get(org_key)
        if state is None:
            return 1
        wait = state.next_probe_at - self._clock.monotonic()
        if state.probe_deadline is not None:
            wait = max(wait, self._probe_seconds)
        return max(1, math.ceil(wait))

    def is_paused(self, org_key: str) -> bool:
        """Are this org's writes paused (in this process)?"""
        return org_key in self._paused

    async def record(
        self,
        org_key: str,
        admission: Admission,
        outcome: Outcome,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Feed back what upstream answered to a write admitted by :meth:`admit`."""
        now = self._clock.monotonic()
        state = self._paused.get(org_key)
        if admission is Admission.PROBE and state is not None:
            state.probe_deadline = None
            if outcome is Outcome.SUCCESS:
                del self._paused[org_key]
                await self._emit(
                    EventType.ORG_MAINTENANCE_ENDED,
                    org_key,
                    {"paused_seconds": round(now - state.paused_at, 3), "probes": state.probes},
                )
            elif outcome is not Outcome.ABANDONED:
                state.next_probe_at = now + self._probe_seconds
            return
        if outcome is Outcome.MAINTENANCE and state is None:
            self._paused[org_key] = _Pause(org_key, now, now + self._probe_seconds)
            await self._emit(
                EventType.ORG_MAINTENANCE_STARTED,
                org_key,
                {"probe_seconds": self._probe_seconds, **(details or {})},
            )

    async def _emit(self, event_type: str, org_key: str, payload: dict[str, Any]) -> None:
        _log.info(event_type, org_id=org_key, **payload)
        if self._on_event is None:
            return
        try:
            await self._on_event(event_type, org_key, payload)
        except Exception as exc:  # the outbox being down must not fail a proxied call
            _log.error("write_pause.event_failed", event_type=event_type, org_id=org_key, error=exc)
