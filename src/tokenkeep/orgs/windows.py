"""Sliding-window counts and the session-error spike rule. Pure: values in, values out.

Calls are counted in fixed time buckets (``bucket_seconds`` wide, aligned on the epoch);
a window of ``seconds`` is the sum of every bucket that overlaps ``(now - seconds, now]``,
so it covers between ``seconds`` and ``seconds + bucket_seconds`` of history. That is the
price of storing one row per org, integration and bucket instead of one per call.

A *spike* is an episode: it opens when the window holds at least ``min_errors`` session
errors (``INVALID_SESSION_ID``) that are at least ``min_ratio`` of its calls, and closes
when the rate has fallen back: fewer than ``min_errors`` errors, or a ratio under half of
``min_ratio``. The half-ratio hysteresis keeps a rate hovering at the threshold from
opening and closing an episode (and alerting) every few seconds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "Counts",
    "SpikeChange",
    "SpikeRule",
    "bucket_start",
    "decide_spike",
    "window_since",
]


@dataclass(frozen=True, slots=True)
class Counts:
    """Calls, session errors and calls per cause word, over some span of time."""

    calls: int = 0
    session_errors: int = 0
    causes: Mapping[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Session errors per call (0.0 without calls)."""
        return self.session_errors / self.calls if self.calls else 0.0

    def __add__(self, other: Counts) -> Counts:
        causes = dict(self.causes)
        for cause, n in other.causes.items():
            causes[cause] = causes.get(cause, 0) + n
        return Counts(self.calls + other.calls, self.session_errors + other.session_errors, causes)

    @classmethod
    def total(cls, parts: Iterable[Counts]) -> Counts:
        """The sum of ``parts`` (empty: zero)."""
        result = cls()
        for part in parts:
            result = result + part
        return result


def bucket_start(epoch: float, bucket_seconds: int) -> float:
    """The start (epoch seconds) of the bucket ``epoch`` falls in."""
    return math.floor(epoch / bucket_seconds) * bucket_seconds


def window_since(now: float, seconds: float, bucket_seconds: int) -> float:
    """The oldest bucket start a window of ``seconds`` ending at ``now`` counts (inclusive)."""
    return bucket_start(now - seconds, bucket_seconds)


@dataclass(frozen=True, slots=True)
class SpikeRule:
    """When a window's session errors are a spike (settings ``TOKENKEEP_SPIKE_*``)."""

    min_errors: int = 5
    min_ratio: float = 0.2
    window_seconds: int = 300

    def is_spike(self, counts: Counts) -> bool:
        return counts.session_errors >= self.min_errors and counts.ratio >= self.min_ratio

    def has_fallen_back(self, counts: Counts) -> bool:
        return counts.session_errors < self.min_errors or counts.ratio < self.min_ratio / 2


class SpikeChange(enum.Enum):
    """What a window means for an org's spike episode."""

    NONE = "none"
    OPEN = "open"  # a new episode: raise one org.session_error_spike
    CLOSE = "close"  # the episode is over


def decide_spike(is_open: bool, counts: Counts, rule: SpikeRule) -> SpikeChange:
    """Open, close, or leave the org's episode as it is, given the window's ``counts``."""
    if not is_open:
        return SpikeChange.OPEN if rule.is_spike(counts) else SpikeChange.NONE
    return SpikeChange.CLOSE if rule.has_fallen_back(counts) else SpikeChange.NONE
