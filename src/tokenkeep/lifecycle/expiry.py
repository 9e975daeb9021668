"""When a token expires and when to refresh it, without ``expires_in``. Pure functions.

Salesforce says nothing about expiry in the token answer. What we know, in order of trust:

1. introspection ``exp - iat`` right after we got the token (a DURATION: the provider's
   clock may be minutes or hours away from ours, so its absolute ``exp`` is never compared
   with our time);
2. the integration's configured ``session_timeout_seconds`` (the provider catalog's
   ``default_session_timeout_seconds`` when it has none);
3. what we learned when a session died earlier than predicted (snapped to the provider's
   ``session_timeout_ladder``: the timeouts an org admin can choose).

The org timeout is inactivity based, so use could extend a session; we never count on it:
the estimate is the SHORTEST of what we know, anchored on our own clock at receipt.

:func:`plan_expiry` is the one place that turns those into ``(expires_at,
next_refresh_at)``: after a refresh, at connect, for an import and in the scheduler.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tokenkeep.clock import utc_from_timestamp
from tokenkeep.errors import NotFoundError
from tokenkeep.oauth.models import DEFAULT_SESSION_TIMEOUT_SECONDS
from tokenkeep.providers.catalog import Provider, get_provider
from tokenkeep.store.records import Integration

__all__ = [
    "DEFAULT_TIMEOUT_LADDER",
    "JITTER_FRACTION",
    "MIN_LEARNED_LIFETIME",
    "SAFE_FRACTION",
    "ExpiryPlan",
    "configured_timeout",
    "estimate_expiry",
    "estimate_lifetime",
    "integration_ladder",
    "learn_from_early_death",
    "next_refresh_at",
    "plan_expiry",
    "timeout_ladder",
]

# The session timeouts a Salesforce admin can choose (Setup → Session Settings), in
# seconds: used when the provider catalog names none.
DEFAULT_TIMEOUT_LADDER: tuple[int, ...] = (900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
# A session that died sooner than this was most likely killed by hand (or by a revocation),
# not timed out: learning a shorter "timeout" from it would make us refresh in a loop.
MIN_LEARNED_LIFETIME = 60.0
#: Refresh at this fraction of a token's lifetime...
SAFE_FRACTION = 0.75
#: ...minus a random jitter of up to this fraction of the lifetime, so 10,000 connections
#: imported (or connected) together spread their refreshes out.
JITTER_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class ExpiryPlan:
    """A token's estimated life on our clock, and when to refresh it proactively."""

    lifetime: float
    expires_at: datetime
    next_refresh_at: datetime


def timeout_ladder(provider: Provider | None) -> tuple[int, ...]:
    """The provider's admin-selectable session timeouts (the catalog's data)."""
    if provider is not None and provider.session_timeout_ladder:
        return provider.session_timeout_ladder
    return DEFAULT_TIMEOUT_LADDER


def estimate_lifetime(
    introspection_lifetime: float | None,
    session_timeout_seconds: float,
    learned_timeout: float | None = None,
) -> float:
    """The shortest credible lifetime (seconds) from every source we have."""
    candidates = [float(session_timeout_seconds)] if session_timeout_seconds > 0 else []
    candidates.extend(
        float(value)
        for value in (introspection_lifetime, learned_timeout)
        if value is not None and value > 0
    )
    if not candidates:
        raise ValueError("no positive lifetime to estimate from")
    return min(candidates)


def estimate_expiry(
    received_at: float,
    introspection_lifetime: float | None,
    session_timeout_seconds: float,
    learned_timeout: float | None = None,
) -> float:
    """Epoch seconds (OUR clock) when the token received at ``received_at`` expires.

    Never later than introspection or the configured/learned timeout allow.
    """
    return received_at + estimate_lifetime(
        introspection_lifetime, session_timeout_seconds, learned_timeout
    )


def next_refresh_at(
    expires_at: float,
    lifetime: float,
    margin: float,
    jitter_fraction: float,
    rng: random.Random,
    *,
    safe_fraction: float = SAFE_FRACTION,
) -> float:
    """When to refresh proactively: at ``safe_fraction`` of the lifetime and at least
    ``margin`` before expiry, minus a random jitter of up to ``jitter_fraction`` of the
    lifetime.

    The margin is capped at half the lifetime: a 5-minute token with a 5-minute margin would
    otherwise be "due" the moment it arrives, forever. The result is never before issuance.
    """
    if lifetime <= 0:
        return expires_at
    issued = expires_at - lifetime
    effective_margin = min(max(0.0, margin), lifetime / 2)
    target = min(issued + lifetime * safe_fraction, expires_at - effective_margin)
    jitter = rng.uniform(0.0, max(0.0, jitter_fraction) * lifetime)
    return max(issued, target - jitter)


def plan_expiry(
    received_at: float,
    *,
    configured: float,
    margin: float,
    rng: random.Random,
    introspected: float | None = None,
    learned: float | None = None,
    age: float = 0.0,
) -> ExpiryPlan:
    """THE expiry plan: a token received at ``received_at`` (our clock, epoch seconds).

    ``configured`` is the integration's session timeout, ``introspected`` the
    introspection's ``exp - iat``, ``learned`` the org's learned timeout; the shortest
    wins. ``age`` is how old the token already was when we got it (an import that names its
    ``issued_at``): its remaining life shrinks by that much, never below zero, and the
    refresh comes no later than its expiry.
    """
    lifetime = estimate_lifetime(introspected, configured, learned)
    expires = received_at + max(0.0, lifetime - max(0.0, age))
    refresh_at = next_refresh_at(expires, lifetime, margin, JITTER_FRACTION, rng)
    return ExpiryPlan(
        lifetime=lifetime,
        expires_at=utc_from_timestamp(expires),
        next_refresh_at=utc_from_timestamp(min(refresh_at, expires)),
    )


def learn_from_early_death(
    observed_lifetime: float,
    current_estimate: float,
    *,
    ladder: Sequence[int] = DEFAULT_TIMEOUT_LADDER,
) -> float:
    """A new lifetime estimate after a session died ``observed_lifetime`` seconds after
    receipt, while we predicted ``current_estimate``.

    A death later than predicted teaches nothing (the estimate stays). An earlier death means
    the org's timeout is at most what we saw: snap down to the largest admin-selectable
    timeout that fits (the likely setting), or, below the ladder, to what we saw (at least
    ``MIN_LEARNED_LIFETIME``).
    """
    if observed_lifetime >= current_estimate:
        return current_estimate
    fitting = [float(step) for step in ladder if step <= observed_lifetime]
    learned = max(fitting) if fitting else max(MIN_LEARNED_LIFETIME, observed_lifetime)
    return min(learned, current_estimate)


def configured_timeout(integration: Integration) -> float:
    """The integration's session timeout, else its provider's default (catalog data)."""
    if integration.session_timeout_seconds > 0:
        return float(integration.session_timeout_seconds)
    provider = _provider_of(integration)
    if provider is not None:
        return float(provider.default_session_timeout_seconds)
    return float(DEFAULT_SESSION_TIMEOUT_SECONDS)


def integration_ladder(integration: Integration) -> tuple[int, ...]:
    """The admin-selectable timeouts of the integration's provider (catalog data)."""
    return timeout_ladder(_provider_of(integration))


def _provider_of(integration: Integration) -> Provider | None:
    try:
        return get_provider(integration.provider)
    except NotFoundError:
        return None
