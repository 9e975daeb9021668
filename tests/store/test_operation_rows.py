"""Operation-log entries as the drivers take them: the timestamp text is what
:class:`~tokenkeep.store.models.UTCDateTime` would have stored for the same instant."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tokenkeep.store.operation_rows import utc_text


def test_epoch_seconds_become_the_same_text_as_their_datetime() -> None:
    rng = random.Random(14)
    # Instants over sixty years, many within one second (the cached part) and on its edges.
    instants = [rng.uniform(0, 2_000_000_000) for _ in range(2000)]
    base = 1_796_306_400.0
    instants += [base + i / 1000 for i in range(1500)] + [base - 1e-7, base + 0.9999996]
    for at in instants:
        expected = datetime.fromtimestamp(at, UTC).replace(tzinfo=None)
        text = utc_text(at)
        assert datetime.fromisoformat(text) - expected in (
            timedelta(0),
            timedelta(microseconds=1),
            timedelta(microseconds=-1),
        ), at
        assert len(text) == 26  # fixed width: text order is time order


def test_aware_datetimes_are_written_in_utc_and_naive_ones_refused() -> None:
    paris = timezone(timedelta(hours=1))
    assert utc_text(datetime(2026, 12, 4, 23, 30, 0, 5, tzinfo=paris)) == (
        "2026-12-04 22:30:00.000005"
    )
    with pytest.raises(ValueError, match="naive"):
        utc_text(datetime(2026, 12, 4, 22, 30))
