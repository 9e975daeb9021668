"""When to try a failed delivery again: exponential backoff with full jitter, capped, for
at most ``max_age`` seconds from the start of the round (pure)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

__all__ = ["next_attempt_at"]


def next_attempt_at(
    *,
    attempts: int,
    queued_at: datetime,
    now: datetime,
    base_seconds: float,
    cap_seconds: float,
    max_age_seconds: float,
    rng: random.Random,
) -> datetime | None:
    """The time of the next attempt after ``attempts`` failed ones, or ``None`` to give up.

    The delay is uniform in ``[0, min(cap, base * 2**(attempts-1))]`` (full jitter: many
    endpoints failing together do not retry in lockstep). The last attempt is made at the
    deadline ``queued_at + max_age``; one failing at or after it gives up.
    """
    deadline = queued_at + timedelta(seconds=max_age_seconds)
    if now >= deadline:
        return None
    ceiling = min(cap_seconds, base_seconds * 2 ** max(0, min(attempts - 1, 60)))
    when = now + timedelta(seconds=rng.uniform(0.0, ceiling))
    return min(when, deadline)
