"""Org health: call counts and session errors per org, shared by every gateway.

**What is counted.** Every proxied call that got an answer from Salesforce is one call of
its org and integration; a call whose first answer was ``INVALID_SESSION_ID`` is also a
session error; the call's cause word (``expired``, ``revoked``, ``maintenance``, ...) is
counted too. The proxy calls :meth:`OrgHealth.record_call` (synchronous: one dict update
in memory, no I/O) and :meth:`OrgHealth.remember_limits` (the last ``Sforce-Limit-Info``).

**Where.** In memory per (org, integration, bucket of ``org_health_bucket_seconds``), then
every ``org_health_flush_seconds`` (1 s) a background task adds them to
``org_call_counts`` (upsert-add, so every gateway's counts end up in the same rows) and
writes the last limit info to ``org_state``. Buckets older than
``org_health_retention_seconds`` (24 h) are pruned. The trade-off: a crash loses at most
one flush interval of this process's counts (a failed flush keeps them for the next
one), and other gateways see this one's calls up to one interval late.

**Spikes.** After each flush the orgs that just had session errors, and those with an open
episode, are checked against :class:`~tokenkeep.orgs.windows.SpikeRule` over the shared
window. Opening an episode is a compare-and-set on ``org_state.spike_started_at`` in the
same transaction as its ``org.session_error_spike`` outbox event: one event per episode,
however many gateways see it; the episode's end is logged (``org_spike_ended``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.observability.logging import get_logger
from tokenkeep.observability.metrics import Metrics
from tokenkeep.orgs.windows import Counts, SpikeChange, SpikeRule, decide_spike, window_since
from tokenkeep.orgs.windows import bucket_start as bucket_of
from tokenkeep.periodic import Periodic
from tokenkeep.store import Store
from tokenkeep.store.records import BucketCounts
from tokenkeep.vocabulary import EventType

__all__ = ["OrgHealth"]

_log = get_logger("tokenkeep.orgs.health")
_PRUNE_EVERY_SECONDS = 60.0
_ORG_KEY_MAX = 64  # org_call_counts.org_id
_INTEGRATION_MAX = 100

_Key = tuple[str, str, float]  # org, integration ("" when unknown), bucket start (epoch)


_FAILING_MAX = 10_000  # connections remembered per org for the burst signal


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    session_errors: int = 0
    causes: Counter[str] = field(default_factory=Counter)

    def counts(self) -> Counts:
        return Counts(self.calls, self.session_errors, dict(self.causes))


class OrgHealth:
    """Per-org call counters (in memory, flushed to the database) and the spike episodes."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._clock = clock
        self.metrics: Metrics | None = None  # counts the spike episodes this gateway opens
        self._failing: dict[str, dict[str, float]] = {}
        self.rule = SpikeRule(
            settings.spike_min_errors, settings.spike_min_ratio, settings.spike_window_seconds
        )
        self.bucket_seconds = settings.org_health_bucket_seconds
        self.retention_seconds = settings.org_health_retention_seconds
        self._store: Store | None = None
        self._pending: dict[_Key, _Tally] = {}
        self._flushing: dict[_Key, _Tally] = {}  # being written: still unflushed to readers
        self._limits: dict[str, tuple[str, float]] = {}
        self._pruned_at: float | None = None
        self._loop = Periodic("org-health-flush", settings.org_health_flush_seconds, self.flush)

    # -- service ---------------------------------------------------------------------------

    def attach(self, store: Store | None) -> None:
        """Use ``store`` (the gateway's, once started; ``None`` detaches)."""
        self._store = store

    async def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop the flush loop, then flush what is left (nothing is lost on a clean stop)."""
        await self._loop.stop()
        try:
            await self.flush()
        except Exception as exc:
            _log.warning("org_health.final_flush_failed", error=repr(exc))

    # -- the hot path (synchronous, no I/O) ------------------------------------------------

    def record_call(
        self,
        org_id: str | None,
        integration_key: str | None,
        *,
        cause: str | None,
        session_error: bool,
    ) -> None:
        """Count one proxied call of ``org_id`` (calls of an unknown org are not counted)."""
        if not org_id or len(org_id) > _ORG_KEY_MAX:
            return
        key = (
            org_id,
            (integration_key or "")[:_INTEGRATION_MAX],
            bucket_of(self._clock.time(), self.bucket_seconds),
        )
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = _Tally()
        tally.calls += 1
        if session_error:
            tally.session_errors += 1
        if cause:
            tally.causes[cause] += 1

    def note_failing(self, org_id: str | None, connection_id: str) -> None:
        """A session error of ``connection_id`` seen just now (before its diagnosis ends),
        so the diagnoses of a burst across an org see each other
        (:meth:`failing_connections`). Counting the call is :meth:`record_call`'s."""
        if not org_id:
            return
        failing = self._failing.setdefault(org_id, {})
        if len(failing) >= _FAILING_MAX:
            failing.clear()  # bounded: a burst that large is a burst either way
        failing[connection_id] = self._clock.time()

    def remember_limits(
        self, org_id: str | None, value: str, *, seen_at: float | None = None
    ) -> None:
        """Keep the org's last ``Sforce-Limit-Info`` (written at the next flush)."""
        if not org_id or len(org_id) > _ORG_KEY_MAX:
            return
        at = self._clock.time() if seen_at is None else seen_at
        known = self._limits.get(org_id)
        if known is None or known[1] <= at:
            self._limits[org_id] = (value, at)

    # -- reads -----------------------------------------------------------------------------

    async def windows(
        self, org_ids: list[str], *, seconds: float | None = None, integration: str | None = None
    ) -> dict[str, Counts]:
        """Each org's counts over the last ``seconds`` (default: the spike window), across
        every gateway: the database plus this process's unflushed counts."""
        seconds = self.rule.window_seconds if seconds is None else seconds
        since = window_since(self._clock.time(), seconds, self.bucket_seconds)
        result: dict[str, Counts] = {org: Counts() for org in org_ids}
        store = self._store
        if store is not None:
            for bucket in await store.org_counts.since(
                utc_from_timestamp(since), org_ids=org_ids, integration=integration
            ):
                result[bucket.org_id] = result[bucket.org_id] + _counts(bucket)
        for (org, integ, start), tally in self._unflushed():
            if org in result and start >= since and integration in (None, integ):
                result[org] = result[org] + tally.counts()
        return result

    async def window(self, org_id: str, *, seconds: float | None = None) -> Counts:
        """One org's counts over the last ``seconds`` (see :meth:`windows`)."""
        return (await self.windows([org_id], seconds=seconds))[org_id]

    def failing_connections(
        self, org_id: str, *, seconds: float = 60, exclude: str | None = None
    ) -> int:
        """How many OTHER connections of ``org_id`` met a session error in the last
        ``seconds`` in this process (the diagnosis's burst signal: one connection's many
        concurrent calls on one dead token are one failing connection, not a burst)."""
        since = self._clock.time() - seconds
        failing = self._failing.get(org_id, {})
        return sum(1 for cid, at in failing.items() if at >= since and cid != exclude)

    async def recent_session_errors(self, org_id: str, seconds: float = 60) -> int:
        """Session errors of ``org_id`` in the last ``seconds``, across every gateway (to one
        bucket's precision: ``org_health_bucket_seconds``)."""
        return (await self.window(org_id, seconds=seconds)).session_errors

    def _unflushed(self) -> Iterable[tuple[_Key, _Tally]]:
        yield from list(self._flushing.items())
        yield from list(self._pending.items())

    # -- the flush -------------------------------------------------------------------------

    async def flush(self) -> None:
        """Add this process's counts to the database, store the limit info, check spikes,
        prune old buckets. Counts that could not be written are kept for the next flush."""
        store = self._store
        if store is None:
            return
        pending, self._pending = self._pending, {}
        limits, self._limits = self._limits, {}
        self._flushing = pending
        try:
            if pending:
                await store.org_counts.add(
                    BucketCounts(
                        org,
                        integ,
                        utc_from_timestamp(start),
                        t.calls,
                        t.session_errors,
                        dict(t.causes),
                    )
                    for (org, integ, start), t in pending.items()
                )
            if limits:
                await store.orgs.remember_limits(
                    {org: (value, utc_from_timestamp(at)) for org, (value, at) in limits.items()}
                )
        except BaseException:
            self._keep(pending, limits)
            raise
        finally:
            self._flushing = {}
        erring = {org for (org, _, _), tally in pending.items() if tally.session_errors}
        await self.check_spikes(erring)
        await self._prune(store)

    def _keep(self, pending: dict[_Key, _Tally], limits: dict[str, tuple[str, float]]) -> None:
        for key, tally in pending.items():
            mine = self._pending.setdefault(key, _Tally())
            mine.calls += tally.calls
            mine.session_errors += tally.session_errors
            mine.causes.update(tally.causes)
        for org, (value, at) in limits.items():
            self.remember_limits(org, value, seen_at=at)

    async def _prune(self, store: Store) -> None:
        now = self._clock.time()
        if self._pruned_at is not None and now - self._pruned_at < _PRUNE_EVERY_SECONDS:
            return
        self._pruned_at = now
        await store.org_counts.prune(utc_from_timestamp(now - self.retention_seconds))

    # -- spikes ----------------------------------------------------------------------------

    async def check_spikes(self, candidates: Iterable[str] = ()) -> None:
        """Open or close spike episodes of ``candidates`` and of every org with one open."""
        store = self._store
        if store is None:
            return
        already = set(await store.orgs.open_spikes())
        orgs = sorted(set(candidates) | already)
        if not orgs:
            return
        windows = await self.windows(orgs)
        for org in orgs:
            change = decide_spike(org in already, windows[org], self.rule)
            if change is SpikeChange.OPEN:
                await self._open(store, org, windows[org])
            elif change is SpikeChange.CLOSE:
                await self._close(store, org, windows[org])

    async def _open(self, store: Store, org_id: str, counts: Counts) -> None:
        now = self._clock.now()
        payload = {
            "session_errors": counts.session_errors,
            "calls": counts.calls,
            "ratio": round(counts.ratio, 4),
            "window_seconds": self.rule.window_seconds,
            "causes": dict(counts.causes),
        }
        async with store.db.write() as session:
            opened = await store.orgs.open_spike(session, org_id, now=now)
            if opened:
                store.outbox.add_event(
                    session, EventType.ORG_SESSION_ERROR_SPIKE, payload=payload, org_id=org_id
                )
                await store.operations.log(
                    "org_spike_started",
                    outcome="spike",
                    org_id=org_id,
                    detail=payload,
                    session=session,
                )
        if opened:
            if self.metrics is not None:
                self.metrics.spike_episodes.inc()
            _log.warning(EventType.ORG_SESSION_ERROR_SPIKE, org_id=org_id, **payload)

    async def _close(self, store: Store, org_id: str, counts: Counts) -> None:
        now = self._clock.now()
        async with store.db.write() as session:
            started = await store.orgs.close_spike(session, org_id, now=now)
            if started is not None:
                detail = {
                    "spike_seconds": round((now - started).total_seconds(), 3),
                    "session_errors": counts.session_errors,
                    "calls": counts.calls,
                    "ratio": round(counts.ratio, 4),
                }
                await store.operations.log(
                    "org_spike_ended",
                    outcome="ok",
                    org_id=org_id,
                    detail=detail,
                    session=session,
                )
        if started is not None:
            _log.info("org.session_error_spike_ended", org_id=org_id)


def _counts(bucket: BucketCounts) -> Counts:
    return Counts(bucket.calls, bucket.session_errors, bucket.causes)
