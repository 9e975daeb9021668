"""When a Salesforce token expires, without ``expires_in``. Pure functions.

Salesforce says nothing about expiry in the token answer. What we know, in order of trust:

1. introspection ``exp - iat`` right after we got the token (a DURATION: the provider's
   clock may be minutes or hours away from ours, so its absolute ``exp`` is never compared
   with our time);
2. the integration's configured ``session_timeout_seconds`` (default 2 h);
3. what we learned when a session died earlier than predicted.

The org timeout is inactivity based, so use could extend a session; we never count on it:
the estimate is the SHORTEST of what we know, anchored on our own clock at receipt.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = [
    "DEFAULT_TIMEOUT_LADDER",
    "estimate_expiry",
    "estimate_lifetime",
    "learn_from_early_death",
    "next_refresh_at",
]

# The session timeouts an org admin can choose (Setup → Session Settings), in seconds.
DEFAULT_TIMEOUT_LADDER: tuple[int, ...] = (900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
# A session that died sooner than this was most likely killed by hand (or by a revocation),
# not timed out: learning a shorter "timeout" from it would make us refresh in a loop.
MIN_LEARNED_LIFETIME = 60.0


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
    safe_fraction: float = 0.75,
) -> float:
    """When to refresh proactively: at ``safe_fraction`` of the lifetime and at least
    ``margin`` before expiry, minus a random jitter of up to ``jitter_fraction`` of the
    lifetime (so 10,000 connections imported together spread their refreshes out).

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
