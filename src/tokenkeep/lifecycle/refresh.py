"""One refresh, holding the lease: call the token endpoint, commit, classify a failure.

:class:`Refresher` is what the coordinator's flight runs once it holds a connection's
lease. The order is the product's first principle: the token answer goes straight to the
journal (when it rotates) and the durable commit (:class:`~tokenkeep.lifecycle.durable.
DurableCommit`; nothing is awaited in between, retried through a database outage), and
only then does anyone see the new access token. An answer journaled earlier and never
committed is committed first, instead of a new token call.
Introspection comes after the commit, once per refresh. A failure is classified on a
re-read row (:func:`~tokenkeep.oauth.classify.classify_refresh_failure`): a changed refresh
token means a race (use the newer); a confirmed ``invalid_grant`` means ``needs_reauth``;
transport faults back off and never revoke.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from datetime import timedelta

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import TokenkeepError, TransientUpstreamError
from tokenkeep.lifecycle.cache import ConnectionCache
from tokenkeep.lifecycle.durable import DurableCommit
from tokenkeep.lifecycle.expiry import configured_timeout, plan_expiry
from tokenkeep.lifecycle.lease import LeaseGrant, LeaseHeartbeat
from tokenkeep.lifecycle.persist import CommitResult, record_failure, status_reason_of
from tokenkeep.lifecycle.policy import refusal_error
from tokenkeep.lifecycle.timeouts import SessionTimeouts
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.oauth.classify import IN_PROGRESS, classify_refresh_failure
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.oauth.models import TokenResponse, oauth_app_for
from tokenkeep.observability.logging import get_logger
from tokenkeep.observability.metrics import Metrics
from tokenkeep.secret import Secret
from tokenkeep.store import Connection, Integration, Store
from tokenkeep.vocabulary import AuthMode, Status

__all__ = ["Refresher"]

_log = get_logger("tokenkeep.lifecycle")


class Refresher:
    """Runs one refresh of a connection whose lease this process holds."""

    def __init__(
        self,
        store: Store,
        client: TokenEndpointClient,
        *,
        settings: Settings,
        clock: Clock,
        owner: str,
        cache: ConnectionCache,
        timeouts: SessionTimeouts,
        integration: Callable[[str], Awaitable[Integration]],
        rng: random.Random,
        heartbeat_interval: float | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.client = client
        self.settings = settings
        self.clock = clock
        self.owner = owner
        self.cache = cache
        self.timeouts = timeouts
        self.integration = integration
        self._rng = rng
        self.lease_seconds = settings.refresh_lease_seconds
        self.heartbeat_interval = heartbeat_interval
        # Counters for tests and metrics.
        self.refreshes = 0
        self.fenced_writes = 0
        self.durable = DurableCommit(store, settings=settings, clock=clock, owner=owner)

    def lease(self, connection_id: str) -> LeaseHeartbeat:
        """The lease of ``connection_id`` for this process: taken and kept renewed from a
        thread of its own (:meth:`LeaseHeartbeat.acquire`) until stopped."""
        return LeaseHeartbeat(
            self.store.leases,
            connection_id,
            self.owner,
            clock=self.clock,
            seconds=self.lease_seconds,
            interval=self.heartbeat_interval,
        )

    async def refresh(self, conn: Connection, grant: LeaseGrant) -> FreshToken | None:
        """Call the token endpoint and commit; None when the stored row moved on (use it).

        Counted by result in the metrics: ``ok``, ``fenced``, the cause word of a refusal
        (``revoked``, ...) or our error code (``upstream_unavailable``, ...).
        """
        if self.metrics is None:
            return await self._refresh(conn, grant)
        started = self.clock.monotonic()
        result = "error"
        try:
            token = await self._refresh(conn, grant)
            result = "ok" if token is not None else "fenced"
            return token
        except TokenkeepError as exc:
            result = str(exc.cause) if exc.cause is not None else exc.code
            raise
        finally:
            self.metrics.refreshes.labels(result).inc()
            self.metrics.refresh_seconds.labels(result).observe(self.clock.monotonic() - started)

    async def _refresh(self, conn: Connection, grant: LeaseGrant) -> FreshToken | None:
        integration = await self.integration(conn.integration_key)
        app = oauth_app_for(integration)
        configured = configured_timeout(integration)
        learned = await self.timeouts.learned_timeout(conn.org_id)
        used = conn.credentials.refresh_token if conn.credentials else None
        grant_name = "refresh_token" if app.auth_mode == AuthMode.OAUTH2 else str(app.auth_mode)
        started = self.clock.monotonic()
        failure: OAuthError | UpstreamTransportError | None = None
        commit: CommitResult | None = None
        response: TokenResponse | None = None
        # The lease is kept by the coordinator's LeaseHeartbeat (its own thread) throughout.
        # An answer obtained earlier and never committed (a database outage, a crash)
        # is committed now: calling again with its rotated-out token would be fatal.
        entry = self.durable.pending(conn)
        if entry is not None:
            response = entry.response
            _log.warning("committing a journaled refresh answer", connection_id=conn.id)
            commit = await self.durable.commit(
                conn,
                response,
                used=entry.used_refresh_token,
                expires_at=entry.expires_at,
                next_refresh_at=entry.next_refresh_at,
                grant=entry.grant,
                duration_ms=lambda: 0.0,
                entry=entry,
            )
        else:
            try:
                response = await self.client.obtain(app, used)
            except (OAuthError, UpstreamTransportError) as exc:
                failure = exc
            else:
                # Straight from the answer to the journal/commit: nothing in between.
                commit = await self._commit(
                    conn,
                    response,
                    used=used,
                    configured=configured,
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
            self.cache.forget(conn.id)
            _log.warning(
                "refreshed tokens stored, but the connection needs an admin",
                connection_id=conn.id,
                reason=commit.action_required,
            )
            raise refusal_error(conn.id, Status.ACTION_REQUIRED, commit.action_required)
        if commit.recovered:
            _log.info("connection recovered", connection_id=conn.id)
        if response.signature_mismatch:
            _log.warning(
                "refresh answer's signature does not verify: tokens kept; check the "
                "integration's client_secret",
                connection_id=conn.id,
                integration=conn.integration_key,
            )
        expires_at = await self.timeouts.refine(
            conn.id, app, response, version=commit.version, configured=configured, learned=learned
        )
        token = FreshToken(
            connection_id=conn.id,
            org_id=conn.org_id,
            instance_url=response.instance_url or conn.instance_url,
            access_token=response.access_token,
            version=commit.version,
            expires_at=expires_at,
            issued_to_address=response.local_address or conn.issued_to_address,
            integration_key=conn.integration_key,
            user_id=conn.user_id,
        )
        return self.cache.put(token)

    async def _commit(
        self,
        conn: Connection,
        response: TokenResponse,
        *,
        used: Secret | None,
        configured: float,
        learned: float | None,
        grant_name: str,
        started: float,
    ) -> CommitResult:
        self.refreshes += 1
        plan = plan_expiry(
            response.received_at,
            configured=configured,
            learned=learned,
            margin=self.settings.refresh_margin_seconds,
            rng=self._rng,
        )
        return await self.durable.commit(
            conn,
            response,
            used=used,
            expires_at=plan.expires_at,
            next_refresh_at=plan.next_refresh_at,
            grant=grant_name,
            duration_ms=lambda: max(0.0, (self.clock.monotonic() - started) * 1000),
        )

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
            newer = await self.store.refresh_state.newer_connection_exists(conn)
        attempts = conn.refresh_attempts + 1
        # A rotated answer this process received and could not keep: its loss is known.
        lost_here = conn.id in self.durable.lost
        # Whether the app rotates matters only when an expired lease was taken over (a lost
        # rotation is then the likely story): only then is it looked up.
        rotation = (
            await self._rotation_seen(conn.id)
            if grant.took_over_expired
            and not lost_here
            and isinstance(error, OAuthError)
            and not changed
            else True
        )
        decision = classify_refresh_failure(
            error,
            refresh_token_changed=changed,
            lease_expired_before=grant.took_over_expired or lost_here,
            rotation_enabled=rotation,
            newer_connection_same_user_app=newer,
            attempts=attempts,
            max_attempts=self.settings.refresh_max_attempts,
            rng=self._rng,
        )
        if decision.action == "use_newer_token":
            await self.store.leases.release(conn.id, self.owner)
            return
        if decision.sub_reason == IN_PROGRESS and await self._rotation_seen(conn.id):
            decision = dataclasses.replace(
                decision, retry_after=max(decision.retry_after or 0.0, self._in_progress_wait)
            )
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
        self.durable.lost.discard(conn.id)  # reported now (rotation_lost): once
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
        reason = status_reason_of(decision)
        details: dict[str, object] = {
            "connection_id": conn.id,
            "reason": reason,
            "attempts": attempts,
        }
        if decision.status in (Status.NEEDS_REAUTH, Status.ACTION_REQUIRED):
            self.cache.forget(conn.id)
            raise refusal_error(conn.id, Status(decision.status), reason, attempts=attempts)
        if retry_at is not None:
            details["retry_at"] = retry_at.isoformat()
        raise TransientUpstreamError(
            f"connection {conn.id}: the token endpoint failed ({error}); retrying later",
            retry_at=retry_at.timestamp() if retry_at is not None else None,
            details=details,
        )

    @property
    def _in_progress_wait(self) -> float:
        """How long to wait before replaying a refresh token Salesforce says is "already
        being processed", when the app rotates: the other request (a holder frozen or slow
        past its lease) may still get its answer and commit it, which the version check
        accepts (a failure does not bump the version). Replaying the old token before that
        would be a reuse of a rotated-out token, which revokes the whole family."""
        return self.settings.upstream_timeout_seconds + self.settings.refresh_lease_seconds

    async def _rotation_seen(self, connection_id: str) -> bool:
        """Does this connection's app rotate refresh tokens? Inferred per connection from
        its last successful refresh (the operation log records whether the answer carried
        a new refresh token). Unknown (never refreshed, log pruned): assume it does."""
        last = await self.store.operations.list(
            connection_id=connection_id, kind="refresh", outcome="ok", limit=1
        )
        detail = last[0].detail if last else None
        if not isinstance(detail, dict) or not isinstance(detail.get("rotated"), bool):
            return True
        return bool(detail["rotated"])
