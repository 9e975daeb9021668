"""When a token expires and when to refresh it, without ``expires_in``. Pure functions.

Salesforce says nothing about expiry in the token answer. What we know, in order of trust:

1. introspection ``exp - iat`` right after we got the token (a DURATION: the provider's
   clock may be minutes or hours away from ours, so its absolute ``exp`` is never compared
   with our time);
2. the integration's configured ``session_timeout_seconds`` (the provider catalog's
   ``default_session_timeout_seconds`` when it has none);
3. what we learned when a session EXPIRED earlier than predicted (snapped to the provider's
   ``session_timeout_ladder``: the timeouts an org admin can choose; never below its
   smallest step; growing back a step a day without new evidence).

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
    "REGROW_SECONDS",
    "SAFE_FRACTION",
    "ExpiryPlan",
    "configured_timeout",
    "estimate_expiry",
    "estimate_lifetime",
    "integration_ladder",
    "learn_from_early_death",
    "next_refresh_at",
    "plan_expiry",
    "plausible_expiry",
    "regrown_estimate",
    "timeout_ladder",
]

# The session timeouts a Salesforce admin can choose (Setup → Session Settings), in
# seconds: used when the provider catalog names none.
DEFAULT_TIMEOUT_LADDER: tuple[int, ...] = (900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
#: A learned estimate grows back one ladder step per this many seconds without new
#: evidence of an early expiry (see :func:`regrown_estimate`).
REGROW_SECONDS = 86_400.0
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


def plausible_expiry(age: float, ladder: Sequence[int] = DEFAULT_TIMEOUT_LADDER) -> int | None:
    """The admin-selectable timeout a session that expired at ``age`` seconds after receipt
    most likely had: the largest step not above ``age`` (the death is noticed at the next
    call, so ``age`` only bounds the timeout from above). None below the smallest step
    (15 minutes for Salesforce): no timeout is that short, someone ended the session.
    """
    fitting = [step for step in ladder if step <= age]
    return max(fitting) if fitting else None


def learn_from_early_death(
    observed_lifetime: float,
    current_estimate: float,
    *,
    ladder: Sequence[int] = DEFAULT_TIMEOUT_LADDER,
) -> float:
    """A new lifetime estimate after a session EXPIRED ``observed_lifetime`` seconds after
    receipt, while we predicted ``current_estimate``.

    A death later than predicted teaches nothing. An earlier one snaps the estimate down to
    the admin-selectable timeout it fits (:func:`plausible_expiry`), so it never goes below
    the ladder's smallest step (15 minutes): a session killed a minute after receipt
    teaches nothing. (The caller rules out maintenance, IP locks and moves first.)
    """
    if observed_lifetime >= current_estimate:
        return current_estimate
    step = plausible_expiry(observed_lifetime, ladder)
    if step is None:
        return current_estimate
    return min(float(step), current_estimate)


def regrown_estimate(
    learned: float,
    learned_age: float,
    *,
    configured: float,
    ladder: Sequence[int] = DEFAULT_TIMEOUT_LADDER,
    period: float = REGROW_SECONDS,
) -> float | None:
    """A learned estimate that grows back: one ladder step up per ``period`` seconds
    without new evidence (``learned_age``: seconds since it was learned). None once it is
    back at ``configured`` (nothing learned any more).

    Why: an org admin may raise the timeout again, and one misread sample must not cost
    a refresh per short period forever. A right estimate is re-learned by the next early
    expiry (one recovered call per ``period``).
    """
    steps = int(max(0.0, learned_age) // period) if period > 0 else 0
    value = learned
    higher = sorted(float(s) for s in ladder if s > learned)
    for step in higher[:steps]:
        value = step
    if steps > len(higher):
        value = configured
    return None if value >= configured else value


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
