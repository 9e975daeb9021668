"""The proactive refresh scheduler: refresh every connection before it expires.

Each cycle:

1. **Plan**: rows without a ``next_refresh_at`` (e.g. imported) get one, from their
   ``expires_at`` minus a safe margin and a random jitter, so 10,000 connections imported at
   once do not all come due in the same second.
2. **Claim** a batch of due rows (``status`` active/error, ``next_refresh_at <= now``, no
   live lease, org not backing off) in one short write transaction: on PostgreSQL
   ``FOR UPDATE SKIP LOCKED`` so N gateway instances take disjoint batches; on SQLite the
   ``BEGIN IMMEDIATE`` write transaction serialises claimers. The claim takes the row's
   lease as ``claim:<owner>`` for ``claim_seconds`` in the same transaction, so no other
   scheduler claims it again and callers wait for this refresh instead of starting their
   own; if this process dies, the claim expires and the row is due again (a taken-over
   claim, unlike a taken-over refresh lease, says no refresh token was consumed).
3. **Refresh** each claimed row through the coordinator's single flight
   (``refresh_if_unchanged(id, claimed_version)``): a row someone else refreshed since the
   claim is left alone. A commit sets the real next ``next_refresh_at``; a failure sets the
   backoff time.

Token-endpoint trouble backs off per org (exponential, jittered), so one org's outage does
not burn the batch. ``lag_seconds`` (the oldest overdue row) is exposed for metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from datetime import datetime

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import (
    ActionRequiredError,
    NeedsReauthError,
    NotFoundError,
    TokenkeepError,
    TransientUpstreamError,
)
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.expiry import plan_expiry
from tokenkeep.lifecycle.lease import claim_owner
from tokenkeep.oauth.classify import backoff_delay
from tokenkeep.observability.logging import get_logger
from tokenkeep.store import Store

__all__ = ["CycleReport", "RefreshScheduler"]

_log = get_logger("tokenkeep.scheduler")


@dataclass
class CycleReport:
    """What one scheduler cycle did."""

    planned: int = 0
    claimed: int = 0
    refreshed: int = 0
    skipped: int = 0
    failed: int = 0
    backed_off_orgs: list[str] = field(default_factory=list)


@dataclass
class _OrgBackoff:
    failures: int
    until: float


class RefreshScheduler:
    """Claims due connections in batches and refreshes them through the coordinator.

    A :class:`~tokenkeep.runtime.Service`: ``start()`` spawns the loop, ``stop()`` ends it.
    ``run_once()`` runs one cycle (tests and the CLI drive it directly too).
    """

    def __init__(
        self,
        store: Store,
        coordinator: RefreshCoordinator,
        *,
        settings: Settings,
        clock: Clock | None = None,
        batch_size: int | None = None,
        interval: float | None = None,
        concurrency: int | None = None,
        claim_seconds: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.coordinator = coordinator
        self.settings = settings
        self.clock: Clock = clock or store.clock
        self.batch_size = batch_size or settings.scheduler_batch_size
        self.interval = interval or settings.scheduler_interval_seconds
        # Token calls in flight at once (TOKENKEEP_SCHEDULER_CONCURRENCY, default 8).
        self.concurrency = concurrency or settings.scheduler_concurrency
        # Long enough for a whole batch to finish; short enough that a crashed scheduler's
        # claims come back quickly.
        self.claim_seconds = claim_seconds or (
            2 * settings.refresh_lease_seconds + settings.upstream_timeout_seconds
        )
        self._rng = rng or random.Random()
        self._org_backoff: dict[str, _OrgBackoff] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lag_seconds = 0.0
        self.cycles = 0

    # -- service --------------------------------------------------------------------------
    async def start(self) -> None:
        """Run cycles in the background until :meth:`stop`."""
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self.run_forever(), name="refresh-scheduler")

    async def stop(self) -> None:
        """Finish the current cycle's refreshes and stop."""
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_forever(self) -> None:
        """Cycle until stopped: straight on while work is due, else wait ``interval``."""
        _log.info("scheduler started", owner=self.coordinator.owner)
        while not self._stop.is_set():
            try:
                report = await self.run_once()
            except TokenkeepError as exc:  # database away: try again next interval
                _log.warning("scheduler cycle failed", error=str(exc))
                report = CycleReport()
            except Exception:
                _log.exception("scheduler cycle crashed")
                report = CycleReport()
            # Straight on while there is work: a full batch, or rows that came due while
            # this batch was refreshing. (Rows of backed-off orgs alone claim nothing, so
            # they never make this loop spin.)
            if report.claimed >= self.batch_size or (report.claimed and self.lag_seconds > 0):
                continue
            await self._pause(self.interval)
        _log.info("scheduler stopped")

    async def _pause(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (sleeper, stopper):
                fut.cancel()

    # -- one cycle ------------------------------------------------------------------------
    async def run_once(self) -> CycleReport:
        """Plan, claim one batch, refresh it; update the lag."""
        report = CycleReport()
        metrics = self.coordinator.metrics
        report.planned = await self._plan()
        claimed = await self._claim()
        report.claimed = len(claimed)
        if claimed:
            gate = asyncio.Semaphore(self.concurrency)
            try:
                outcomes = await asyncio.gather(
                    *(self._refresh_one(gate, cid, version, org) for cid, version, org in claimed)
                )
            finally:
                await self._release_claims([cid for cid, _, _ in claimed])
            for outcome in outcomes:
                setattr(report, outcome, getattr(report, outcome) + 1)
                if metrics is not None:
                    metrics.scheduler_refreshes.labels(outcome).inc()
        report.backed_off_orgs = sorted(self._active_backoffs())
        self.lag_seconds = await self.measure_lag()
        if report.claimed or report.planned:
            _log.info(
                "scheduler cycle",
                planned=report.planned,
                claimed=report.claimed,
                refreshed=report.refreshed,
                failed=report.failed,
                lag_seconds=round(self.lag_seconds, 1),
                backed_off_orgs=report.backed_off_orgs,
            )
        if metrics is not None:
            metrics.scheduler_lag_seconds.set(self.lag_seconds)
        self.cycles += 1
        return report

    async def measure_lag(self) -> float:
        """Seconds since the oldest due connection became due (0 when none is overdue)."""
        now = self.clock.now()
        oldest = await self.store.schedule.oldest_due(now)
        return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0

    async def _plan(self) -> int:
        """Give imported rows (no ``next_refresh_at``) a jittered refresh time."""
        margin = self.settings.refresh_margin_seconds
        now = self.clock.now()

        def plan(expires_at: datetime | None, issued_at: datetime | None) -> datetime:
            if expires_at is None:
                return now  # expiry unknown: refresh now, and learn it
            # The same policy as after a refresh (safe fraction, margin, jitter).
            lifetime = (
                (expires_at - issued_at).total_seconds()
                if issued_at is not None and issued_at < expires_at
                else 4 * margin
            )
            planned = plan_expiry(
                expires_at.timestamp() - lifetime,
                configured=lifetime,
                margin=margin,
                rng=self._rng,
            )
            return max(now, planned.next_refresh_at)

        return await self.store.schedule.plan_unplanned(self.batch_size, plan)

    async def _claim(self) -> list[tuple[str, int, str]]:
        rows = await self.store.schedule.claim_due(
            now=self.clock.now(),
            limit=self.batch_size,
            owner=claim_owner(self.coordinator.owner),
            seconds=self.claim_seconds,
            skip_orgs=self._active_backoffs(),
        )
        return [(r.id, r.version, r.org_id) for r in rows]

    async def _release_claims(self, connection_ids: list[str]) -> None:
        """Drop the claims this batch did not turn into a refresh (skipped, failed early)."""
        await self.store.schedule.release_claims(
            connection_ids, claim_owner(self.coordinator.owner)
        )

    async def _refresh_one(
        self, gate: asyncio.Semaphore, connection_id: str, version: int, org_id: str
    ) -> str:
        async with gate:
            if org_id in self._active_backoffs():
                await self._release_claim(connection_id, version)
                return "skipped"
            try:
                token = await self.coordinator.refresh_if_unchanged(connection_id, version)
            except TransientUpstreamError as exc:
                self._back_off(org_id)
                _log.info(
                    "scheduled refresh failed; org backs off",
                    connection_id=connection_id,
                    org_id=org_id,
                    error=str(exc),
                )
                return "failed"
            except (NeedsReauthError, ActionRequiredError, NotFoundError):
                return "failed"  # recorded by the coordinator (or the row is gone)
            except Exception:
                # One row's bug must not abandon the rest of the batch (or its claims).
                _log.exception("scheduled refresh crashed", connection_id=connection_id)
                return "failed"
            self._org_backoff.pop(org_id, None)
            return "refreshed" if token.version > version else "skipped"

    # -- per-org backoff ------------------------------------------------------------------
    def _active_backoffs(self) -> list[str]:
        now = self.clock.time()
        return [org for org, b in self._org_backoff.items() if b.until > now]

    def _back_off(self, org_id: str) -> None:
        failures = self._org_backoff[org_id].failures + 1 if org_id in self._org_backoff else 1
        delay = backoff_delay(failures, self._rng, base=self.interval, cap=900.0)
        self._org_backoff[org_id] = _OrgBackoff(failures, self.clock.time() + delay)

    async def _release_claim(self, connection_id: str, version: int) -> None:
        """Give a claimed row back (due again now) when its org is backing off."""
        await self.store.schedule.requeue(connection_id, version, now=self.clock.now())
