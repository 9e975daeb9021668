"""What the lifecycle learns about token lifetimes, with I/O: introspection and org timeouts.

* :func:`introspected_lifetime` — "introspect, else estimate", once: the introspection's
  ``exp - iat`` (a duration) for a token just received, or None when introspection is not
  possible (no client secret) or fails (the configured/learned estimate then stands).
* :class:`SessionTimeouts` — an org's learned session timeout
  (``org_state.session_timeout_estimate_seconds``, shared by every gateway, cached here for
  a few seconds), shortened by :meth:`~SessionTimeouts.learn_if_early_death` only on
  evidence of expiry; and :meth:`~SessionTimeouts.refine`, which introspects a refreshed
  token once and writes a shorter expiry if introspection says so.

The arithmetic is :mod:`tokenkeep.lifecycle.expiry` (pure).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.lifecycle.cache import TtlCache
from tokenkeep.lifecycle.expiry import (
    DEFAULT_TIMEOUT_LADDER,
    estimate_lifetime,
    learn_from_early_death,
    plan_expiry,
    regrown_estimate,
)
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.oauth.models import OAuthApp, TokenResponse
from tokenkeep.observability.logging import get_logger
from tokenkeep.secret import Secret
from tokenkeep.store import Connection, Store

__all__ = ["SessionTimeouts", "introspected_lifetime"]

_log = get_logger("tokenkeep.lifecycle")
_CONFIG_TTL = 30.0


async def introspected_lifetime(
    client: TokenEndpointClient, app: OAuthApp, access_token: Secret, **log_fields: object
) -> float | None:
    """The token's ``exp - iat`` from introspection, or None (no client secret — a
    JWT-bearer app may have none, introspection needs client authentication — inactive,
    or a failed call)."""
    if not app.client_secret:
        return None
    try:
        result = await client.introspect(app, access_token)
    except (OAuthError, UpstreamTransportError) as exc:
        _log.info("introspection failed; keeping the estimate", error=str(exc), **log_fields)
        return None
    return result.lifetime_seconds if result is not None else None


class SessionTimeouts:
    """Learned org timeouts (cached) and the one introspection per refresh."""

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
        self._learned: TtlCache[float | None] = TtlCache(_CONFIG_TTL, clock.monotonic)

    async def learned_timeout(self, org_id: str) -> float | None:
        """The org's learned session timeout (cached for a few seconds), if any."""
        fresh, value = self._learned.get(org_id)
        if fresh:
            return value
        return self._learned.put(org_id, await self.read_learned_timeout(org_id))

    async def read_learned_timeout(self, org_id: str) -> float | None:
        """The org's learned session timeout, read now, grown back by the time since it
        was learned (:func:`~tokenkeep.lifecycle.expiry.regrown_estimate`); None when
        nothing (or nothing any more) is learned."""
        learned = await self.store.orgs.learned_estimate(org_id)
        if learned is None:
            return None
        return regrown_estimate(
            learned.seconds,
            self.clock.time() - learned.learned_at.timestamp(),
            configured=float("inf"),
            period=self.settings.learned_timeout_regrow_seconds,
        )

    async def refine(
        self,
        connection_id: str,
        app: OAuthApp,
        response: TokenResponse,
        *,
        version: int,
        configured: float,
        learned: float | None,
    ) -> datetime:
        """One introspection per refresh: its ``exp - iat`` anchored on our clock at
        receipt. Writes the expiry again only when introspection shortens it."""
        estimate = estimate_lifetime(None, configured, learned)
        introspected = await introspected_lifetime(
            self.client, app, response.access_token, connection_id=connection_id
        )
        lifetime = estimate_lifetime(introspected, configured, learned)
        if lifetime >= estimate:
            # Introspection confirms what the commit stored: no second write.
            return utc_from_timestamp(response.received_at + estimate)
        plan = plan_expiry(
            response.received_at,
            configured=configured,
            introspected=introspected,
            learned=learned,
            margin=self.settings.refresh_margin_seconds,
            rng=self._rng,
        )
        await self.store.refresh_state.update_expiry(
            connection_id,
            version,
            expires_at=plan.expires_at,
            next_refresh_at=plan.next_refresh_at,
        )
        return plan.expires_at

    async def learn_if_early_death(
        self,
        conn: Connection,
        *,
        died_at: float | None = None,
        ladder: Sequence[int] = DEFAULT_TIMEOUT_LADDER,
    ) -> float | None:
        """A token that EXPIRED (``died_at``, our clock; now by default) before its predicted
        expiry: the org's timeout is shorter than we think. Shorten the org's estimate to
        the ``ladder`` step the death fits; returns what was learned (None: nothing).

        Call it only on evidence of expiry (the diagnosis checks: a fresh token worked from
        the same address on the same host, the refused one is no longer active, no org-wide
        burst, no maintenance), never on a bare rejection. A death whose age fits no
        admin-selectable timeout (a killed session, 40 s after receipt) teaches nothing.
        """
        if conn.expires_at is None or conn.issued_at is None:
            return None
        now = self.clock.time() if died_at is None else died_at
        predicted = conn.expires_at.timestamp() - conn.issued_at.timestamp()
        observed = now - conn.issued_at.timestamp()
        if observed >= predicted or observed <= 0:
            return None
        current = await self.read_learned_timeout(conn.org_id) or predicted
        learned = learn_from_early_death(observed, current, ladder=ladder)
        if learned >= current:
            _log.info(
                "session ended early but fits no session timeout; nothing learned",
                org_id=conn.org_id,
                observed_seconds=round(observed),
            )
            return None
        await self.store.orgs.store_learned_timeout(conn.org_id, learned)
        self._learned.put(conn.org_id, learned)
        _log.info(
            "session expired earlier than predicted; org estimate shortened",
            org_id=conn.org_id,
            observed_seconds=round(observed),
            estimate_seconds=round(learned),
        )
        return learned
