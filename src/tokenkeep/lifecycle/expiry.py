"""Expiry without ``expires_in``: the coordinator's glue around :mod:`tokenkeep.oauth.expiry`.

* :meth:`ExpiryKeeper.schedule` turns a lifetime into ``(expires_at, next_refresh_at)``,
  anchored on OUR clock at receipt (never on the provider's timestamps).
* :meth:`ExpiryKeeper.refine` introspects a new token once (``exp - iat``, a duration) and
  writes a shorter expiry if introspection says so.
* :meth:`ExpiryKeeper.learn_if_early_death` shortens an org's estimate
  (``org_state.session_timeout_estimate_seconds``) when a token dies before its predicted
  expiry; the estimate only ever shrinks.
"""

from __future__ import annotations

import random
from datetime import datetime

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.lifecycle.persist import update_expiry
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.oauth.expiry import estimate_lifetime, learn_from_early_death, next_refresh_at
from tokenkeep.oauth.models import OAuthApp, TokenResponse
from tokenkeep.observability.logging import get_logger
from tokenkeep.store import Connection, Integration, Store
from tokenkeep.store.models import OrgStateRow

__all__ = ["ExpiryKeeper"]

_log = get_logger("tokenkeep.lifecycle")
_JITTER_FRACTION = 0.1  # of the lifetime: spreads refreshes of tokens issued together
_CONFIG_TTL = 30.0


class ExpiryKeeper:
    """Knows when tokens expire and when to refresh them; learns from early deaths."""

    def __init__(
        self,
        store: Store,
        client: TokenEndpointClient,
        *,
        settings: Settings,
        clock: Clock,
        rng: random.Random,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.clock = clock
        self._rng = rng
        self._org_timeouts: dict[str, tuple[float, float | None]] = {}

    def schedule(self, received_at: float, lifetime: float) -> tuple[datetime, datetime]:
        """``(expires_at, next_refresh_at)`` for a token received at ``received_at``."""
        expires = received_at + lifetime
        refresh_at = next_refresh_at(
            expires,
            lifetime,
            self.settings.refresh_margin_seconds,
            _JITTER_FRACTION,
            self._rng,
        )
        return utc_from_timestamp(expires), utc_from_timestamp(refresh_at)

    async def refine(
        self,
        connection_id: str,
        app: OAuthApp,
        response: TokenResponse,
        *,
        version: int,
        integration: Integration,
        learned: float | None,
    ) -> datetime:
        """One introspection per refresh: its ``exp - iat`` (a duration) anchored on our
        clock at receipt. On any failure the configured/learned estimate stands."""
        introspected: float | None = None
        if not app.client_secret:
            # Introspection needs client authentication (a JWT-bearer app may have none).
            return utc_from_timestamp(
                response.received_at
                + estimate_lifetime(None, integration.session_timeout_seconds, learned)
            )
        try:
            result = await self.client.introspect(app, response.access_token)
            introspected = result.lifetime_seconds if result is not None else None
        except (OAuthError, UpstreamTransportError) as exc:
            _log.info(
                "introspection failed; keeping the estimate",
                connection_id=connection_id,
                error=str(exc),
            )
        estimate = estimate_lifetime(None, integration.session_timeout_seconds, learned)
        lifetime = estimate_lifetime(introspected, integration.session_timeout_seconds, learned)
        if lifetime >= estimate:
            # Introspection confirms what the commit stored: no second write.
            return utc_from_timestamp(response.received_at + estimate)
        expires, refresh_at = self.schedule(response.received_at, lifetime)
        await update_expiry(
            self.store, connection_id, version, expires_at=expires, next_refresh_at=refresh_at
        )
        return expires

    async def learned_timeout(self, org_id: str) -> float | None:
        """The org's learned session timeout (cached for a few seconds), if any."""
        now = self.clock.monotonic()
        cached = self._org_timeouts.get(org_id)
        if cached is not None and now - cached[0] < _CONFIG_TTL:
            return cached[1]
        value = await self.read_learned_timeout(org_id)
        self._org_timeouts[org_id] = (now, value)
        return value

    async def read_learned_timeout(self, org_id: str) -> float | None:
        """The org's learned session timeout, read now."""
        async with self.store.db.read() as session:
            value = await session.scalar(
                select(OrgStateRow.session_timeout_estimate_seconds).where(
                    OrgStateRow.org_id == org_id
                )
            )
        return float(value) if value else None

    async def learn_if_early_death(self, conn: Connection, *, died_at: float | None = None) -> None:
        """A token that EXPIRED (``died_at``, our clock; now by default) before its predicted
        expiry: the org's timeout is shorter than we think. Shorten the org's estimate
        (never lengthen it). Call it only on evidence of expiry (a refresh that worked and
        a new token that was accepted), never on a bare rejection."""
        if conn.expires_at is None or conn.issued_at is None:
            return
        now = self.clock.time() if died_at is None else died_at
        predicted = conn.expires_at.timestamp() - conn.issued_at.timestamp()
        observed = now - conn.issued_at.timestamp()
        if observed >= predicted or observed <= 0:
            return
        current = await self.read_learned_timeout(conn.org_id) or predicted
        learned = learn_from_early_death(observed, current)
        if learned >= current:
            return
        await self._store_learned_timeout(conn.org_id, learned)
        self._org_timeouts[conn.org_id] = (self.clock.monotonic(), learned)
        _log.info(
            "session died earlier than predicted; org estimate shortened",
            org_id=conn.org_id,
            observed_seconds=round(observed),
            estimate_seconds=round(learned),
        )

    async def _store_learned_timeout(self, org_id: str, seconds: float) -> None:
        now = self.clock.now()
        try:
            async with self.store.db.write() as session:
                row = await session.get(OrgStateRow, org_id)
                if row is None:
                    session.add(
                        OrgStateRow(
                            org_id=org_id,
                            session_timeout_estimate_seconds=int(seconds),
                            updated_at=now,
                        )
                    )
                else:
                    current = row.session_timeout_estimate_seconds
                    if current is None or seconds < current:
                        row.session_timeout_estimate_seconds = int(seconds)
                        row.updated_at = now
                await self.store.operations.log(
                    "expiry_learned",
                    outcome="ok",
                    org_id=org_id,
                    detail={"session_timeout_estimate_seconds": int(seconds)},
                    session=session,
                )
        except sa_exc.IntegrityError:
            pass  # another process inserted the org's row at the same moment: it learned too
