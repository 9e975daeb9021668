"""Sliding windows and the spike rule (src/tokenkeep/orgs/windows.py): pure, table-tested."""

from __future__ import annotations

import pytest

from tokenkeep.orgs.windows import (
    Counts,
    SpikeChange,
    SpikeRule,
    bucket_start,
    decide_spike,
    window_since,
)

RULE = SpikeRule(min_errors=5, min_ratio=0.2, window_seconds=300)


@pytest.mark.parametrize(
    ("is_open", "calls", "errors", "expected"),
    [
        (False, 0, 0, SpikeChange.NONE),
        (False, 25, 5, SpikeChange.OPEN),  # 5 errors, exactly 20 %
        (False, 26, 5, SpikeChange.NONE),  # 5 errors, under 20 %
        (False, 10, 4, SpikeChange.NONE),  # 40 %, but only 4 errors
        (False, 5, 5, SpikeChange.OPEN),
        (True, 25, 5, SpikeChange.NONE),  # still a spike: no second event
        (True, 40, 5, SpikeChange.NONE),  # 12.5 %: above half the threshold, stays open
        (True, 51, 5, SpikeChange.CLOSE),  # under 10 %: fallen back
        (True, 10, 4, SpikeChange.CLOSE),  # under 5 errors
        (True, 0, 0, SpikeChange.CLOSE),  # traffic gone, errors rolled out of the window
    ],
)
def test_a_spike_opens_once_and_closes_when_the_rate_falls_back(
    is_open: bool, calls: int, errors: int, expected: SpikeChange
) -> None:
    assert decide_spike(is_open, Counts(calls, errors), RULE) is expected


@pytest.mark.parametrize(
    ("epoch", "width", "start"),
    [(0, 10, 0), (9.99, 10, 0), (10, 10, 10), (1234.5, 60, 1200), (-1, 10, -10)],
)
def test_buckets_are_aligned_on_the_epoch(epoch: float, width: int, start: float) -> None:
    assert bucket_start(epoch, width) == start


def test_a_window_counts_every_bucket_it_overlaps() -> None:
    # 300 s back from t=1005 is t=705, inside the bucket that starts at 700.
    assert window_since(1005, 300, 10) == 700
    assert window_since(1000, 60, 10) == 940


def test_counts_add_up_by_cause_and_give_a_ratio() -> None:
    total = Counts.total(
        [Counts(10, 2, {"expired": 2}), Counts(10, 3, {"expired": 1, "revoked": 2}), Counts()]
    )
    assert total == Counts(20, 5, {"expired": 3, "revoked": 2})
    assert total.ratio == 0.25
    assert Counts().ratio == 0.0
