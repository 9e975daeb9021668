"""The refresh coordinator: exactly one refresh per connection at a time, everywhere.

``RefreshCoordinator.fresh_token(connection_id, min_ttl)`` returns a token valid for at
least ``min_ttl`` seconds, refreshing only when needed. The layers (DESIGN.md,
"Single-flight refresh"):

1. **In-process**: one flight (an ``asyncio`` task) per connection; concurrent callers await
   it (shielded: a caller that gives up never cancels a refresh half-way).
2. **Across processes/hosts**: a lease on the row (:class:`~tokenkeep.store.leases.
   LeaseRepository`), then a re-read: another worker may have refreshed already. Workers
   that do not get the lease poll the row (short, bounded interval) until the version moves
   or the lease frees.
3. **Fencing and failures**: :class:`~tokenkeep.lifecycle.refresh.Refresher` commits with a
   compare-and-swap on ``version`` and classifies failures after a re-read.

What to do at each read is :func:`tokenkeep.lifecycle.policy.decide` (pure); the
in-process state is :class:`~tokenkeep.lifecycle.cache.ConnectionCache`. This module is
the flight and the lease loop, plus what the proxy and the diagnosis call (``token_for``,
``cached_token``, ``refresh_after_rejection``, ``take_rejection``, ``learn_expiry``).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import secrets
import socket

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.errors import NotFoundError, TransientUpstreamError
from tokenkeep.lifecycle.cache import ConnectionCache, Rejection, TtlCache
from tokenkeep.lifecycle.durable import CommitPendingError
from tokenkeep.lifecycle.expiry import integration_ladder
from tokenkeep.lifecycle.policy import (
    Need,
    Refuse,
    Serve,
    Snapshot,
    Wait,
    decide,
    refusal_error,
)
from tokenkeep.lifecycle.refresh import Refresher
from tokenkeep.lifecycle.timeouts import SessionTimeouts
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.lifecycle.wakeup import Wakeup
from tokenkeep.oauth.classify import is_in_progress_error
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.models import OAuthApp, oauth_app_for
from tokenkeep.observability.logging import get_logger
from tokenkeep.observability.metrics import Metrics
from tokenkeep.store import Connection, Integration, Store
from tokenkeep.vocabulary import AuthMode, Status

__all__ = ["PROXY_MIN_TTL", "RefreshCoordinator"]

_log = get_logger("tokenkeep.lifecycle")

# A flight re-reads and retries after a lost race or a fenced write; each round makes
# progress (someone else committed), so a handful is plenty and the loop stays bounded.
_MAX_ROUNDS = 6
# The proxy asks for a token that lives at least this long (a call plus its one retry).
PROXY_MIN_TTL = 30.0
_CONFIG_TTL = 30.0
_DUE = (Status.ACTIVE, Status.ERROR)  # statuses whose cached token may still be served


class RefreshCoordinator:
    """Single-flight refresh across coroutines, processes and hosts.

    ``owner`` names this process in leases (host, pid and a random tag by default). Tests may
    pass ``heartbeat_interval`` (seconds of real time between lease renewals) and
    ``poll_interval`` (how often a waiter re-reads a row another worker is refreshing).
    A cached token is served without any database read for ``revalidate_seconds``; after
    that, one cheap read of (version, status) confirms it before it is served again.
    """

    def __init__(
        self,
        store: Store,
        client: TokenEndpointClient,
        *,
        settings: Settings,
        clock: Clock | None = None,
        owner: str | None = None,
        poll_interval: float = 0.01,
        heartbeat_interval: float | None = None,
        revalidate_seconds: float = 5.0,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        notify: bool | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.client = client
        self.settings = settings
        self.clock: Clock = clock or store.clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.cache = ConnectionCache(
            revalidate_seconds=revalidate_seconds, monotonic=self.clock.monotonic
        )
        self.lease_seconds = settings.refresh_lease_seconds
        # Waiters on another process's refresh: LISTEN/NOTIFY on PostgreSQL (``notify``
        # None), else polling every ``poll_interval`` (wakeup.py).
        self.wakeup = Wakeup(store, self.clock, notify=notify, poll_interval=poll_interval)
        self._rng = rng or random.Random()
        self.timeouts = SessionTimeouts(
            store, client, settings=settings, clock=self.clock, rng=self._rng
        )
        # An edited integration is picked up within _CONFIG_TTL seconds.
        self._integrations: TtlCache[Integration] = TtlCache(_CONFIG_TTL, self.clock.monotonic)
        self.refresher = Refresher(
            store,
            client,
            settings=settings,
            clock=self.clock,
            owner=self.owner,
            cache=self.cache,
            timeouts=self.timeouts,
            integration=self._integration,
            rng=self._rng,
            heartbeat_interval=heartbeat_interval,
            metrics=metrics,
        )
        self._flights: dict[str, asyncio.Task[FreshToken]] = {}

    def __repr__(self) -> str:
        return f"RefreshCoordinator(owner={self.owner!r})"

    @property
    def refreshes(self) -> int:
        """Token-endpoint answers this process committed (or tried to)."""
        return self.refresher.refreshes

    @property
    def fenced_writes(self) -> int:
        """Refresh answers whose commit was fenced off by a newer stored token."""
        return self.refresher.fenced_writes

    # -- the public surface ---------------------------------------------------------------
    async def fresh_token(self, connection_id: str, min_ttl: float = 60.0) -> FreshToken:
        """A token valid for at least ``min_ttl`` seconds (refreshed only if needed).

        Raises ``NotFoundError``, ``NeedsReauthError`` (no upstream call), or
        ``ActionRequiredError``; ``TransientUpstreamError`` while the provider is failing.
        """
        served = self.cache.servable(connection_id, min_ttl, self.clock.time())
        if served is not None:
            return served
        refused = self.cache.refused_version(connection_id)
        cached = self.cache.get(connection_id)
        if (
            cached is not None
            and cached.version != refused
            and cached.valid_for(min_ttl, self.clock.time())
            and await self._still_current(cached)
        ):
            return cached
        # A token Salesforce refused is never handed out again, however long it "lives".
        return await self._single_flight(connection_id, Need(min_ttl=min_ttl, newer_than=refused))

    async def _still_current(self, cached: FreshToken) -> bool:
        """A cheap look at the row (version, status) behind a cached token, at most every
        ``revalidate_seconds`` per connection: another process may have refreshed it,
        marked it ``needs_reauth`` or deleted it."""
        row = await self.store.refresh_state.peek(cached.connection_id)
        if row is None or row.version != cached.version or row.status not in _DUE:
            self.cache.forget(cached.connection_id)
            return False
        self.cache.confirm(cached.connection_id)
        return True

    async def refresh(self, connection_id: str) -> FreshToken:
        """Force a refresh (``POST /connections/{id}/refresh``) through the single flight.

        Unless another worker refreshes in the meantime, the token stored now is replaced.
        """
        conn = await self.store.connections.get(connection_id)
        self._refuse_if_broken(conn)
        # Not even on request is a refresh token replayed while Salesforce may still be
        # answering another request for it ("already being processed", refresh.py): with
        # rotation the replay would revoke the whole family. That wait is honoured.
        waiting = is_in_progress_error(conn.last_error)
        return await self._single_flight(
            connection_id, Need(newer_than=conn.version, ignore_backoff=not waiting)
        )

    async def refresh_if_unchanged(self, connection_id: str, version: int) -> FreshToken:
        """Refresh unless the row has moved past ``version`` (the scheduler's claim)."""
        return await self._single_flight(
            connection_id, Need(newer_than=version, ignore_backoff=True)
        )

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        """A token newer than ``rejected_version``: the one another worker already stored
        (no refresh then), or a single-flight refresh.

        A rejection alone says nothing about WHY (expiry, password change, IP lock, API
        Client Control): the rejected token is only remembered here (and never served
        again); the diagnosis decides later, and only it calls :meth:`learn_expiry`.
        """
        conn = await self.store.connections.get(connection_id)
        if conn.version == rejected_version:
            # Before the flight: if the refresh fails, the refused token is still never
            # served again (callers get the backoff's 503, not Salesforce's 401).
            self.cache.remember_rejection(conn, self.clock.time())
        return await self._single_flight(connection_id, Need(newer_than=rejected_version))

    def take_rejection(self, connection_id: str, version: int) -> Rejection | None:
        """The row as it was when the token of ``version`` was refused (once per token)."""
        return self.cache.take_rejection(connection_id, version)

    async def learn_expiry(self, rejection: Rejection) -> float | None:
        """The refused token EXPIRED (the diagnosis proved it): if that was earlier than
        predicted, shorten the org's session estimate (returns what was learned)."""
        integration = await self._integration(rejection.connection.integration_key)
        return await self.timeouts.learn_if_early_death(
            rejection.connection, died_at=rejection.at, ladder=integration_ladder(integration)
        )

    async def oauth_app(self, integration_key: str) -> OAuthApp:
        """The token-endpoint view of an integration (cached for a few seconds)."""
        return oauth_app_for(await self._integration(integration_key))

    async def token_for(self, connection_id: str) -> FreshToken:
        """The proxy's token: from the cache while it lives long enough, else fresh."""
        return self.cached_token(connection_id) or await self.fresh_token(
            connection_id, min_ttl=PROXY_MIN_TTL
        )

    def cached_token(self, connection_id: str) -> FreshToken | None:
        """The proxy's token when :meth:`fresh_token` would serve it from the cache without
        any read (valid for ``PROXY_MIN_TTL``, its row confirmed within
        ``revalidate_seconds``); else None, and the caller awaits :meth:`token_for`.

        Synchronous on purpose: the proxy's hot path, no coroutine per call.
        """
        return self.cache.servable(connection_id, PROXY_MIN_TTL, self.clock.time())

    async def replay_journal(self) -> int:
        """Commit the journaled token answers still waiting (see ``durable.py``)."""
        return await self.refresher.durable.replay_journal()

    async def aclose(self) -> None:
        """Stop this process's refresh listener (if one was started)."""
        await self.wakeup.aclose()

    def forget(self, connection_id: str) -> None:
        """Drop a connection from the cache (deleted, re-connected)."""
        self.cache.forget(connection_id)

    # -- single flight ----------------------------------------------------------------------
    async def _single_flight(self, connection_id: str, need: Need) -> FreshToken:
        for _ in range(_MAX_ROUNDS):
            task = self._flights.get(connection_id)
            if task is None or task.done():
                # A done flight may still be in the map: its _landed callback is scheduled
                # but has not run. Joining it again would return at once, round after round.
                task = asyncio.create_task(
                    self._flight(connection_id, need), name=f"refresh:{connection_id}"
                )
                self._flights[connection_id] = task
                task.add_done_callback(functools.partial(self._landed, connection_id))
                return await asyncio.shield(task)
            token = await self._join(task)
            if need.met_by(token.version, token.expires_epoch, self.clock.time()):
                return token
            # The flight we joined was for a weaker need (e.g. a shorter min_ttl): go again.
        raise TransientUpstreamError(f"connection {connection_id}: could not get a fresh token")

    async def _join(self, task: asyncio.Task[FreshToken]) -> FreshToken:
        """Wait on another caller's flight (counted: ``tokenkeep_refresh_waiters``)."""
        if self.metrics is None:
            return await asyncio.shield(task)
        waiters = self.metrics.refresh_waiters
        waiters.inc()
        try:
            return await asyncio.shield(task)
        finally:
            waiters.dec()

    def _landed(self, connection_id: str, task: asyncio.Task[FreshToken]) -> None:
        if self._flights.get(connection_id) is task:
            del self._flights[connection_id]
        if not task.cancelled():
            task.exception()  # mark retrieved: every joiner gets it re-raised

    async def _flight(self, connection_id: str, need: Need) -> FreshToken:
        for round_ in range(_MAX_ROUNDS):
            if round_ == 0 and need.ignore_backoff and need.newer_than is not None:
                # A forced or scheduled refresh almost always refreshes: go straight for
                # the lease (the re-read under it checks everything the pre-read would).
                seen_version = need.newer_than
            else:
                conn = await self.store.connections.get(connection_id, with_credentials=True)
                served = await self._apply(conn, need, under_lease=False)
                if served is not None:
                    return served
                seen_version = conn.version
            lease = self.refresher.lease(connection_id)  # taken and kept off the loop
            grant = await lease.acquire()
            if not grant.acquired:
                await self._wait_for_holder(connection_id, seen_version)
                continue
            if grant.took_over_expired:
                _log.warning(
                    "took over an expired refresh lease",
                    connection_id=connection_id,
                    previous_owner=grant.holder,
                )
            released = False
            try:
                # Re-read under the lease: someone may have refreshed since our first read.
                conn = await self.store.connections.get(connection_id, with_credentials=True)
                served = await self._apply(conn, need, under_lease=True)
                if served is not None:
                    return served
                released = True  # every path below ends in a write that frees the lease
                token = await self.refresher.refresh(conn, grant)
                if token is not None:
                    return token
            except CommitPendingError:
                raise  # an uncommitted answer: the lease stays, to expire (durable.py)
            except BaseException:
                released = False
                raise
            finally:
                await lease.stop()
                if not released:
                    await asyncio.shield(self.store.leases.release(connection_id, self.owner))
                await self.wakeup.landed(connection_id)
        raise TransientUpstreamError(
            f"connection {connection_id}: the token kept changing; try again",
            details={"connection_id": connection_id},
        )

    async def _apply(self, conn: Connection, need: Need, *, under_lease: bool) -> FreshToken | None:
        """Run :func:`~tokenkeep.lifecycle.policy.decide` on ``conn``: the token to serve,
        None to refresh, or the error to answer with (raised)."""
        auth_mode = AuthMode.OAUTH2
        has_refresh = conn.credentials is not None and conn.credentials.refresh_token is not None
        if not has_refresh and not under_lease:
            auth_mode = (await self._integration(conn.integration_key)).auth_mode
        snapshot = Snapshot(
            version=conn.version,
            status=conn.status,
            status_reason=conn.status_reason,
            expires_at=Snapshot.epoch(conn.expires_at),
            refresh_attempts=conn.refresh_attempts,
            next_refresh_at=Snapshot.epoch(conn.next_refresh_at),
            has_refresh_token=has_refresh,
            auth_mode=AuthMode(auth_mode),
        )
        decision = decide(snapshot, need, self.clock.time(), under_lease=under_lease)
        if isinstance(decision, Serve):
            return self._remember(conn)
        if isinstance(decision, Refuse):
            self.cache.forget(conn.id)
            raise refusal_error(
                conn.id, decision.status, decision.reason, org_id=conn.org_id or None
            )
        if isinstance(decision, Wait):
            retry_at = utc_from_timestamp(decision.retry_at).isoformat()
            raise TransientUpstreamError(
                f"connection {conn.id}: the token endpoint is failing; next attempt at {retry_at}",
                retry_at=decision.retry_at,
                details={
                    "connection_id": conn.id,
                    "retry_at": retry_at,
                    "attempts": decision.attempts,
                },
            )
        return None  # Refresh

    def _refuse_if_broken(self, conn: Connection) -> None:
        if conn.status in (Status.NEEDS_REAUTH, Status.ACTION_REQUIRED):
            self.cache.forget(conn.id)
            raise refusal_error(
                conn.id, Status(conn.status), conn.status_reason, org_id=conn.org_id or None
            )

    async def _wait_for_holder(self, connection_id: str, seen_version: int) -> None:
        """Wait (bounded) while another worker refreshes the row (wakeup.py)."""
        budget = 2 * self.lease_seconds + self.settings.upstream_timeout_seconds
        await self.wakeup.wait_for_holder(connection_id, seen_version, budget)

    async def _integration(self, key: str) -> Integration:
        fresh, cached = self._integrations.get(key)
        if fresh and cached is not None:
            return cached
        integration = await self.store.integrations.get(key, with_secrets=True)
        return self._integrations.put(key, integration)

    def _remember(self, conn: Connection) -> FreshToken:
        if conn.credentials is None:
            raise NotFoundError(f"connection {conn.id!r} has no stored token")
        return self.cache.put(
            FreshToken(
                connection_id=conn.id,
                org_id=conn.org_id,
                instance_url=conn.instance_url,
                access_token=conn.credentials.access_token,
                version=conn.version,
                expires_at=conn.expires_at,
                issued_to_address=conn.issued_to_address,
                integration_key=conn.integration_key,
                user_id=conn.user_id,
            )
        )
