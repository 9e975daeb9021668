"""The refresh coordinator: exactly one refresh per connection at a time, everywhere.

``RefreshCoordinator.fresh_token(connection_id, min_ttl)`` returns a token valid for at
least ``min_ttl`` seconds, refreshing only when needed. The layers (DESIGN.md,
"Single-flight refresh"):

1. **In-process**: one flight (an ``asyncio`` task) per connection; concurrent callers await
   it (shielded: a caller that gives up never cancels a refresh half-way).
2. **Across processes/hosts**: a lease on the row (:mod:`tokenkeep.lifecycle.lease`), then a
   re-read: another worker may have refreshed already. Workers that do not get the lease
   poll the row (short, bounded interval) until the version moves or the lease frees.
3. **Fencing**: the new tokens are written with ``WHERE id=? AND version=?``
   (:func:`~tokenkeep.lifecycle.persist.commit_refresh`); a worker whose lease expired while
   the provider was slow has its write rejected and uses the stored token instead.
4. **Never lose a refresh token**: the commit is the first thing done with a token response
   (nothing is awaited in between), and the caller sees the new access token only after it.
   Introspection (to learn the real expiry) comes after the commit, once per refresh.
5. **Failures are classified** (:func:`~tokenkeep.oauth.classify.classify_refresh_failure`)
   after a re-read: a changed refresh token means a race (use the newer token); a confirmed
   ``invalid_grant`` means ``needs_reauth``; transport faults back off and never revoke.

It also implements the proxy's ``TokenSource`` protocol (``token_for``,
``refresh_after_rejection``, ``confirm_recovered``, ``report_cause``) on top of an
in-process cache tagged with the row version, so the proxy does not read the database per
call.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import secrets
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy import exc as sa_exc

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import (
    ActionRequiredError,
    DatabaseUnavailableError,
    NeedsReauthError,
    NotFoundError,
    TransientUpstreamError,
)
from tokenkeep.lifecycle.expiry import ExpiryKeeper
from tokenkeep.lifecycle.lease import LeaseGrant, LeaseHeartbeat, acquire_lease, release_lease
from tokenkeep.lifecycle.persist import (
    CommitResult,
    commit_refresh,
    record_failure,
    status_reason_of,
)
from tokenkeep.lifecycle.tokens import FreshToken, TokenCache
from tokenkeep.oauth.classify import classify_refresh_failure
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.oauth.expiry import estimate_lifetime
from tokenkeep.oauth.models import OAuthApp, TokenResponse
from tokenkeep.observability.logging import get_logger
from tokenkeep.secret import Secret
from tokenkeep.store import Connection, Integration, Store
from tokenkeep.store.models import ConnectionRow, OperationRow

__all__ = ["RefreshCoordinator", "oauth_app_for"]

_log = get_logger("tokenkeep.lifecycle")
_T = cast(Table, ConnectionRow.__table__)

# A flight re-reads and retries after a lost race or a fenced write; each round makes
# progress (someone else committed), so a handful is plenty and the loop stays bounded.
_MAX_ROUNDS = 6
_COMMIT_RETRIES = 3
# The proxy asks for a token that lives at least this long (a call plus its one retry).
PROXY_MIN_TTL = 30.0
_JITTER_FRACTION = 0.1
_CONFIG_TTL = 30.0
_DUE = ("active", "error")  # statuses whose cached token may still be served
_REJECTED_MAX = 4096  # rejected tokens remembered until their replay's outcome is known


def oauth_app_for(integration: Integration) -> OAuthApp:
    """The token-endpoint view of an integration read ``with_secrets=True``."""
    secrets_ = integration.secrets
    return OAuthApp(
        client_id=integration.client_id,
        login_url=integration.login_url,
        client_secret=secrets_.client_secret if secrets_ else None,
        scopes=tuple(integration.scopes),
        auth_mode=integration.auth_mode,  # type: ignore[arg-type]
        private_key=secrets_.private_key if secrets_ else None,
        username=integration.username,
        session_timeout_seconds=integration.session_timeout_seconds,
        provider=integration.provider,
    )


@dataclass(frozen=True, slots=True)
class _Need:
    """What a caller needs; a flight's result is reused by joiners whose need it meets.

    ``min_ttl``: the token must live at least this long. ``newer_than``: the token must come
    from a row version greater than this (a rejected token, a forced refresh, a scheduler
    claim).
    """

    min_ttl: float | None = None
    newer_than: int | None = None
    # The scheduler and an explicit refresh may try while a failing connection backs off
    # (the scheduler only claims a row once its retry time has come).
    ignore_backoff: bool = False


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
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.clock: Clock = clock or store.clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.cache = TokenCache()
        # When each cached token's row was last seen unchanged (clock.monotonic()).
        self._checked: dict[str, float] = {}
        self.revalidate_seconds = revalidate_seconds
        self.lease_seconds = settings.refresh_lease_seconds
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self._rng = rng or random.Random()
        self.expiry = ExpiryKeeper(
            store, client, settings=settings, clock=self.clock, rng=self._rng
        )
        self._flights: dict[str, asyncio.Task[FreshToken]] = {}
        # Rejected tokens awaiting proof that the replacement works (confirm_recovered):
        # (connection id, rejected version) -> (the row as rejected, when, our clock).
        self._rejected: dict[tuple[str, int], tuple[Connection, float]] = {}
        # Short-lived caches of what every refresh reads but rarely changes (an edited
        # integration or a learned org timeout is picked up within _CONFIG_TTL seconds).
        self._integrations: dict[str, tuple[float, Integration]] = {}
        # Counters for tests and metrics.
        self.refreshes = 0
        self.fenced_writes = 0

    def __repr__(self) -> str:
        return f"RefreshCoordinator(owner={self.owner!r})"

    # -- the public surface ---------------------------------------------------------------
    async def fresh_token(self, connection_id: str, min_ttl: float = 60.0) -> FreshToken:
        """A token valid for at least ``min_ttl`` seconds (refreshed only if needed).

        Raises ``NotFoundError``, ``NeedsReauthError`` (no upstream call), or
        ``ActionRequiredError``; ``TransientUpstreamError`` while the provider is failing.
        """
        cached = self.cache.get(connection_id)
        if cached is not None and cached.valid_for(min_ttl, self.clock.time()):
            checked = self._checked.get(connection_id)
            if checked is not None and self.clock.monotonic() - checked < self.revalidate_seconds:
                return cached
            if await self._still_current(cached):
                return cached
        return await self._single_flight(connection_id, _Need(min_ttl=min_ttl))

    async def _still_current(self, cached: FreshToken) -> bool:
        """A cheap look at the row (version, status) behind a cached token, at most every
        ``revalidate_seconds`` per connection: another process may have refreshed it,
        marked it ``needs_reauth`` or deleted it."""
        async with self.store.db.read() as session:
            row = (
                await session.execute(
                    select(_T.c.version, _T.c.status).where(_T.c.id == cached.connection_id)
                )
            ).one_or_none()
        if row is None or row.version != cached.version or row.status not in _DUE:
            self.cache.drop(cached.connection_id)
            self._checked.pop(cached.connection_id, None)
            return False
        self._checked[cached.connection_id] = self.clock.monotonic()
        return True

    async def refresh(self, connection_id: str) -> FreshToken:
        """Force a refresh (``POST /connections/{id}/refresh``) through the single flight.

        Unless another worker refreshes in the meantime, the token stored now is replaced.
        """
        conn = await self.store.connections.get(connection_id)
        self._raise_for_status(conn)
        return await self._single_flight(
            connection_id, _Need(newer_than=conn.version, ignore_backoff=True)
        )

    async def refresh_if_unchanged(self, connection_id: str, version: int) -> FreshToken:
        """Refresh unless the row has moved past ``version`` (the scheduler's claim)."""
        return await self._single_flight(
            connection_id, _Need(newer_than=version, ignore_backoff=True)
        )

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        """A token newer than ``rejected_version``: the one another worker already stored
        (no refresh then), or a single-flight refresh.

        A rejection alone says nothing about WHY (expiry, password change, IP lock, API
        Client Control): the rejected token is only remembered here, and the org's session
        estimate is shortened by :meth:`confirm_recovered`, once the new token has worked.
        """
        conn = await self.store.connections.get(connection_id)
        rejected_at = self.clock.time()
        token = await self._single_flight(connection_id, _Need(newer_than=rejected_version))
        if conn.version == rejected_version:
            if len(self._rejected) >= _REJECTED_MAX:
                self._rejected.pop(next(iter(self._rejected)))  # oldest first: bounded
            self._rejected.setdefault((connection_id, rejected_version), (conn, rejected_at))
        return token

    async def confirm_recovered(self, connection_id: str, rejected_version: int) -> None:
        """The call replayed with a token newer than ``rejected_version`` was accepted.

        Only now is the evidence "expired": the refresh worked AND the new token was
        accepted, so the old one died of age. If it died before its predicted expiry, the
        org's session timeout is shorter than we think: learn it (once per rejected token).
        """
        pending = self._rejected.pop((connection_id, rejected_version), None)
        if pending is None:
            return
        conn, rejected_at = pending
        await self.expiry.learn_if_early_death(conn, died_at=rejected_at)

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
        cached = self.cache.get(connection_id)
        if cached is None or cached.expires_epoch is None:
            return None  # expiry unknown: never "valid for" (FreshToken.valid_for)
        checked = self._checked.get(connection_id)
        if checked is None or self.clock.monotonic() - checked >= self.revalidate_seconds:
            return None
        if cached.expires_epoch - self.clock.time() < PROXY_MIN_TTL:
            return None
        return cached

    async def report_cause(self, connection_id: str, cause: str, evidence: dict[str, Any]) -> None:
        """Record why a proxied call failed for good (diagnosis builds on the log)."""
        _log.info("proxied call failed", connection_id=connection_id, cause=cause, **evidence)

    def forget(self, connection_id: str) -> None:
        """Drop a connection from the cache (deleted, re-connected)."""
        self.cache.drop(connection_id)
        self._checked.pop(connection_id, None)

    # -- single flight ----------------------------------------------------------------------
    async def _single_flight(self, connection_id: str, need: _Need) -> FreshToken:
        for _ in range(_MAX_ROUNDS):
            task = self._flights.get(connection_id)
            if task is None:
                task = asyncio.create_task(
                    self._flight(connection_id, need), name=f"refresh:{connection_id}"
                )
                self._flights[connection_id] = task
                task.add_done_callback(functools.partial(self._landed, connection_id))
                return await asyncio.shield(task)
            token = await asyncio.shield(task)
            if self._meets(token, need):
                return token
            # The flight we joined was for a weaker need (e.g. a shorter min_ttl): go again.
        raise TransientUpstreamError(f"connection {connection_id}: could not get a fresh token")

    def _landed(self, connection_id: str, task: asyncio.Task[FreshToken]) -> None:
        if self._flights.get(connection_id) is task:
            del self._flights[connection_id]
        if not task.cancelled():
            task.exception()  # mark retrieved: every joiner gets it re-raised

    def _meets(self, token: FreshToken, need: _Need) -> bool:
        if need.newer_than is not None and token.version <= need.newer_than:
            return False
        return need.min_ttl is None or token.valid_for(need.min_ttl, self.clock.time())

    def _satisfied(self, conn: Connection, need: _Need) -> bool:
        if need.newer_than is not None and conn.version <= need.newer_than:
            return False
        if need.min_ttl is None:
            return True
        if conn.expires_at is None:
            return False  # never assume a token lives longer than we know
        return conn.expires_at.timestamp() - self.clock.time() >= need.min_ttl

    async def _flight(self, connection_id: str, need: _Need) -> FreshToken:
        for round_ in range(_MAX_ROUNDS):
            if round_ == 0 and need.ignore_backoff and need.newer_than is not None:
                # A forced or scheduled refresh almost always refreshes: go straight for
                # the lease (the re-read under it checks everything the pre-read would).
                seen_version = need.newer_than
            else:
                conn = await self.store.connections.get(connection_id, with_credentials=True)
                self._raise_for_status(conn)
                if self._satisfied(conn, need):
                    return self._remember(conn)
                backing_off = None if need.ignore_backoff else self._backoff_answer(conn, need)
                if backing_off is not None:
                    return backing_off
                unrefreshable = await self._unrefreshable_answer(conn, need)
                if unrefreshable is not None:
                    return unrefreshable
                seen_version = conn.version
            grant = await acquire_lease(
                self.store.db,
                connection_id,
                self.owner,
                now=self.clock.now(),
                seconds=self.lease_seconds,
            )
            if not grant.acquired:
                await self._wait_for_holder(connection_id, seen_version)
                continue
            released = False
            try:
                # Re-read under the lease: someone may have refreshed since our first read.
                conn = await self.store.connections.get(connection_id, with_credentials=True)
                self._raise_for_status(conn)
                if self._satisfied(conn, need):
                    return self._remember(conn)
                released = True  # every path below ends in a write that frees the lease
                token = await self._refresh_holding_lease(conn, grant)
                if token is not None:
                    return token
            except BaseException:
                released = False
                raise
            finally:
                if not released:
                    await asyncio.shield(release_lease(self.store.db, connection_id, self.owner))
        raise TransientUpstreamError(
            f"connection {connection_id}: the token kept changing; try again",
            details={"connection_id": connection_id},
        )

    def _raise_for_status(self, conn: Connection) -> None:
        if conn.status == "needs_reauth":
            self.cache.drop(conn.id)
            raise NeedsReauthError(
                f"connection {conn.id} needs to be re-authorized ({conn.status_reason})",
                details={"connection_id": conn.id, "reason": conn.status_reason},
            )
        if conn.status == "action_required":
            self.cache.drop(conn.id)
            reason = conn.status_reason or "action_required"
            raise ActionRequiredError(
                f"connection {conn.id} needs an org admin to act ({reason})",
                details={"connection_id": conn.id, "cause": reason.split(":", 1)[0]},
            )

    def _backoff_answer(self, conn: Connection, need: _Need) -> FreshToken | None:
        """While a failing refresh backs off: the current token if it still lives, else a
        clear 503. Callers must not hammer a provider that is down."""
        if conn.refresh_attempts <= 0 or conn.next_refresh_at is None:
            return None
        now = self.clock.time()
        if conn.next_refresh_at.timestamp() <= now:
            return None
        alive = conn.expires_at is not None and conn.expires_at.timestamp() > now
        if alive and need.newer_than is None:
            return self._remember(conn)
        raise TransientUpstreamError(
            f"connection {conn.id}: the token endpoint is failing; next attempt at "
            f"{conn.next_refresh_at.isoformat()}",
            details={
                "connection_id": conn.id,
                "retry_at": conn.next_refresh_at.isoformat(),
                "attempts": conn.refresh_attempts,
            },
        )

    async def _unrefreshable_answer(self, conn: Connection, need: _Need) -> FreshToken | None:
        """An oauth2 connection without a refresh token (an import) cannot refresh: its
        token is served, however short its remaining life, until its known expiry; only
        after that does the refresh attempt answer ``needs_reauth`` (``no_refresh_token``).
        """
        if need.newer_than is not None or conn.expires_at is None:
            return None
        if conn.credentials is None or conn.credentials.refresh_token is not None:
            return None
        if conn.expires_at.timestamp() <= self.clock.time():
            return None
        integration = await self._integration(conn.integration_key)
        if integration.auth_mode != "oauth2":
            return None
        return self._remember(conn)

    async def _wait_for_holder(self, connection_id: str, seen_version: int) -> None:
        """Poll the row while another worker refreshes it (bounded)."""
        budget = 2 * self.lease_seconds + self.settings.upstream_timeout_seconds
        polls = max(1, int(budget / self.poll_interval))
        query = select(_T.c.version, _T.c.status, _T.c.lease_owner, _T.c.lease_until).where(
            _T.c.id == connection_id
        )
        for _ in range(polls):
            await asyncio.sleep(self.poll_interval)
            async with self.store.db.read() as session:
                row = (await session.execute(query)).one_or_none()
            if row is None:
                raise NotFoundError(f"connection {connection_id!r} does not exist")
            if row.version != seen_version or row.status in ("needs_reauth", "action_required"):
                return
            if row.lease_owner is None or row.lease_until is None:
                return
            if row.lease_until <= self.clock.now():
                return
        raise TransientUpstreamError(
            f"connection {connection_id}: another worker's refresh did not finish in time"
        )

    # -- the refresh itself -----------------------------------------------------------------
    async def _refresh_holding_lease(
        self, conn: Connection, grant: LeaseGrant
    ) -> FreshToken | None:
        """Call the token endpoint and commit; None when the stored row moved on (use it)."""
        integration = await self._integration(conn.integration_key)
        app = oauth_app_for(integration)
        learned = await self.expiry.learned_timeout(conn.org_id)
        used = conn.credentials.refresh_token if conn.credentials else None
        grant_name = "refresh_token" if app.auth_mode == "oauth2" else app.auth_mode
        started = self.clock.monotonic()
        failure: OAuthError | UpstreamTransportError | None = None
        commit: CommitResult | None = None
        response: TokenResponse | None = None
        async with LeaseHeartbeat(
            self.store.db,
            conn.id,
            self.owner,
            clock=self.clock,
            seconds=self.lease_seconds,
            interval=self.heartbeat_interval,
        ):
            try:
                response = await self.client.obtain(app, used)
            except (OAuthError, UpstreamTransportError) as exc:
                failure = exc
            else:
                self.refreshes += 1
                # Straight from the response to the durable commit: nothing in between.
                commit = await self._commit(
                    conn,
                    response,
                    used=used,
                    integration=integration,
                    learned=learned,
                    grant_name=grant_name,
                    started=started,
                )
        duration_ms = max(0.0, (self.clock.monotonic() - started) * 1000)
        if failure is not None:
            await self._on_failure(conn, grant, failure, grant_name, duration_ms)
            return None
        if commit is None or response is None:  # pragma: no cover - obtain() returned
            raise TransientUpstreamError(f"connection {conn.id}: refresh produced nothing")
        if not commit.committed:
            self.fenced_writes += 1
            _log.warning(
                "refresh result fenced off: a newer token is stored",
                connection_id=conn.id,
                read_version=conn.version,
            )
            return None
        if commit.action_required is not None:
            # Tokens are stored; the connection waits for an admin (e.g. an insecure URL).
            self.cache.drop(conn.id)
            _log.warning(
                "refreshed tokens stored, but the connection needs an admin",
                connection_id=conn.id,
                reason=commit.action_required,
            )
            raise ActionRequiredError(
                f"connection {conn.id} needs an org admin to act ({commit.action_required})",
                details={
                    "connection_id": conn.id,
                    "reason": commit.action_required,
                    "cause": commit.action_required.split(":", 1)[0],
                },
            )
        if commit.recovered:
            _log.info("connection recovered", connection_id=conn.id)
        if response.signature_mismatch:
            _log.warning(
                "refresh answer's signature does not verify: tokens kept; check the "
                "integration's client_secret",
                connection_id=conn.id,
                integration=conn.integration_key,
            )
        expires_at = await self.expiry.refine(
            conn.id, app, response, version=commit.version, integration=integration, learned=learned
        )
        token = FreshToken(
            connection_id=conn.id,
            org_id=conn.org_id,
            instance_url=response.instance_url or conn.instance_url,
            access_token=response.access_token,
            version=commit.version,
            expires_at=expires_at,
            issued_to_address=response.local_address or conn.issued_to_address,
        )
        return self._cache_put(token)

    async def _commit(
        self,
        conn: Connection,
        response: TokenResponse,
        *,
        used: Secret | None,
        integration: Integration,
        learned: float | None,
        grant_name: str,
        started: float,
    ) -> CommitResult:
        lifetime = estimate_lifetime(None, integration.session_timeout_seconds, learned)
        expires, refresh_at = self.expiry.schedule(response.received_at, lifetime)
        for attempt in range(1, _COMMIT_RETRIES + 1):
            try:
                return await asyncio.shield(
                    commit_refresh(
                        self.store,
                        conn,
                        response,
                        used_refresh_token=used,
                        owner=self.owner,
                        expires_at=expires,
                        next_refresh_at=refresh_at,
                        duration_ms=max(0.0, (self.clock.monotonic() - started) * 1000),
                        grant=grant_name,
                        allow_insecure_loopback=self.settings.allow_insecure_loopback,
                    )
                )
            except (DatabaseUnavailableError, sa_exc.OperationalError):
                # The one place a refresh token could be lost: insist a little.
                if attempt == _COMMIT_RETRIES:
                    raise
                _log.error("could not store a refreshed token; retrying", connection_id=conn.id)
                await asyncio.sleep(0.2 * attempt)
        raise TransientUpstreamError(f"connection {conn.id}: could not store the token")

    async def _on_failure(
        self,
        conn: Connection,
        grant: LeaseGrant,
        error: OAuthError | UpstreamTransportError,
        grant_name: str,
        duration_ms: float,
    ) -> None:
        """Classify a failed attempt on a re-read row; store the verdict; raise it.

        Returns (None) only for a race: the refresh token changed under us, use the newer.
        """
        current = await self.store.connections.get(conn.id)
        changed = (
            current.version != conn.version
            or current.refresh_token_fingerprint != conn.refresh_token_fingerprint
        )
        newer = False
        if isinstance(error, OAuthError) and not changed:
            newer = await self._newer_connection_exists(conn)
        attempts = conn.refresh_attempts + 1
        # Whether the app rotates matters only when an expired lease was taken over (a lost
        # rotation is then the likely story): only then is it looked up.
        rotation = (
            await self._rotation_seen(conn.id)
            if grant.took_over_expired and isinstance(error, OAuthError) and not changed
            else True
        )
        decision = classify_refresh_failure(
            error,
            refresh_token_changed=changed,
            lease_expired_before=grant.took_over_expired,
            rotation_enabled=rotation,
            newer_connection_same_user_app=newer,
            attempts=attempts,
            max_attempts=self.settings.refresh_max_attempts,
            rng=self._rng,
        )
        if decision.action == "use_newer_token":
            await release_lease(self.store.db, conn.id, self.owner)
            return
        retry_at = (
            self.clock.now() + timedelta(seconds=decision.retry_after)
            if decision.retry_after is not None
            else None
        )
        written = await record_failure(
            self.store,
            conn,
            decision,
            owner=self.owner,
            attempts=attempts,
            retry_at=retry_at,
            duration_ms=duration_ms,
            grant=grant_name,
            error_text=str(error),
        )
        if not written:
            return  # the row moved on meanwhile: the loop re-reads and uses it
        log = _log.warning if decision.status else _log.info
        log(
            "refresh failed",
            connection_id=conn.id,
            org_id=conn.org_id,
            action=decision.action,
            reason=decision.reason,
            sub_reason=decision.sub_reason,
            attempts=attempts,
        )
        details = {
            "connection_id": conn.id,
            "reason": status_reason_of(decision),
            "attempts": attempts,
        }
        if decision.status == "needs_reauth":
            self.cache.drop(conn.id)
            raise NeedsReauthError(
                f"connection {conn.id} needs to be re-authorized ({status_reason_of(decision)})",
                details=details,
            )
        if decision.status == "action_required":
            self.cache.drop(conn.id)
            raise ActionRequiredError(
                f"connection {conn.id} needs an org admin to act ({status_reason_of(decision)})",
                details={**details, "cause": decision.reason},
            )
        if retry_at is not None:
            details["retry_at"] = retry_at.isoformat()
        raise TransientUpstreamError(
            f"connection {conn.id}: the token endpoint failed ({error}); retrying later",
            details=details,
        )

    async def _rotation_seen(self, connection_id: str) -> bool:
        """Does this connection's app rotate refresh tokens? Inferred per connection from
        its last successful refresh (the operation log records whether the answer carried
        a new refresh token). Unknown (never refreshed, log pruned): assume it does."""
        query = (
            select(OperationRow.detail)
            .where(
                OperationRow.connection_id == connection_id,
                OperationRow.kind == "refresh",
                OperationRow.outcome == "ok",
            )
            .order_by(OperationRow.at.desc(), OperationRow.id.desc())
            .limit(1)
        )
        async with self.store.db.read() as session:
            detail = await session.scalar(query)
        if not isinstance(detail, dict) or not isinstance(detail.get("rotated"), bool):
            return True
        return bool(detail["rotated"])

    async def _newer_connection_exists(self, conn: Connection) -> bool:
        """Another connection of the same user and app, created later (the 5-approval cap
        evicts the oldest family, so ours is the one that died)."""
        query = (
            select(_T.c.id)
            .where(
                _T.c.integration_key == conn.integration_key,
                _T.c.org_id == conn.org_id,
                _T.c.user_id == conn.user_id,
                _T.c.id != conn.id,
                _T.c.created_at > conn.created_at,
            )
            .limit(1)
        )
        async with self.store.db.read() as session:
            return (await session.execute(query)).first() is not None

    # -- expiry learning --------------------------------------------------------------------
    async def _integration(self, key: str) -> Integration:
        now = self.clock.monotonic()
        cached = self._integrations.get(key)
        if cached is not None and now - cached[0] < _CONFIG_TTL:
            return cached[1]
        integration = await self.store.integrations.get(key, with_secrets=True)
        self._integrations[key] = (now, integration)
        return integration

    def _cache_put(self, token: FreshToken) -> FreshToken:
        cached = self.cache.put(token)
        if cached is token:
            self._checked[token.connection_id] = self.clock.monotonic()
        return cached

    def _remember(self, conn: Connection) -> FreshToken:
        if conn.credentials is None:
            raise NotFoundError(f"connection {conn.id!r} has no stored token")
        token = FreshToken(
            connection_id=conn.id,
            org_id=conn.org_id,
            instance_url=conn.instance_url,
            access_token=conn.credentials.access_token,
            version=conn.version,
            expires_at=conn.expires_at,
            issued_to_address=conn.issued_to_address,
        )
        return self._cache_put(token)
