"""Expiry without expires_in: every branch of tokenkeep.lifecycle.expiry."""

from __future__ import annotations

import random

import pytest

from tokenkeep.lifecycle.expiry import (
    DEFAULT_TIMEOUT_LADDER,
    estimate_expiry,
    estimate_lifetime,
    learn_from_early_death,
    next_refresh_at,
    plan_expiry,
    regrown_estimate,
    timeout_ladder,
)
from tokenkeep.providers import get_provider

T0 = 1_767_225_600.0


@pytest.mark.parametrize(
    ("introspection", "configured", "learned", "expected"),
    [
        pytest.param(None, 7200, None, 7200.0, id="configured-only"),
        pytest.param(3600.0, 7200, None, 3600.0, id="introspection-shorter-wins"),
        pytest.param(86400.0, 7200, None, 7200.0, id="configured-shorter-wins"),
        pytest.param(None, 7200, 1800.0, 1800.0, id="learned-shorter-wins"),
        pytest.param(3600.0, 7200, 900.0, 900.0, id="shortest-of-three"),
        pytest.param(0.0, 7200, None, 7200.0, id="bogus-zero-introspection-ignored"),
        pytest.param(-5.0, 7200, -1.0, 7200.0, id="negative-values-ignored"),
    ],
)
def test_estimate_expiry_is_the_shortest_credible_lifetime(
    introspection: float | None, configured: int, learned: float | None, expected: float
) -> None:
    assert estimate_lifetime(introspection, configured, learned) == expected
    assert estimate_expiry(T0, introspection, configured, learned) == T0 + expected


def test_expiry_is_anchored_on_our_receipt_time_not_the_providers_clock() -> None:
    # The provider's clock may be hours ahead (emulator advanced); only the duration counts.
    received_at = T0
    assert estimate_expiry(received_at, 7200.0, 7200) == received_at + 7200


def test_estimate_needs_some_positive_lifetime() -> None:
    with pytest.raises(ValueError):
        estimate_lifetime(None, 0)


def test_next_refresh_at_uses_safe_fraction_before_margin() -> None:
    rng = random.Random(0)
    at = next_refresh_at(T0 + 7200, 7200, 300, 0.0, rng)
    assert at == T0 + 0.75 * 7200


def test_next_refresh_at_respects_margin_when_tighter_than_fraction() -> None:
    rng = random.Random(0)
    at = next_refresh_at(T0 + 7200, 7200, 3000, 0.0, rng, safe_fraction=0.9)
    assert at == T0 + 7200 - 3000


def test_margin_is_capped_at_half_the_lifetime_so_short_tokens_do_not_loop() -> None:
    rng = random.Random(0)
    at = next_refresh_at(T0 + 300, 300, 300, 0.0, rng, safe_fraction=1.0)
    assert at == T0 + 150


def test_next_refresh_at_never_before_issuance() -> None:
    rng = random.Random(0)
    at = next_refresh_at(T0 + 100, 100, 0, 5.0, rng, safe_fraction=0.1)
    assert at >= T0


def test_zero_lifetime_means_refresh_at_expiry() -> None:
    assert next_refresh_at(T0, 0, 300, 0.1, random.Random(0)) == T0


def test_ten_thousand_imports_spread_over_many_seconds() -> None:
    rng = random.Random(1234)
    times = [next_refresh_at(T0 + 7200, 7200, 300, 0.1, rng) for _ in range(10_000)]
    assert all(T0 + 0.65 * 7200 <= t <= T0 + 0.75 * 7200 for t in times)
    per_second: dict[int, int] = {}
    for t in times:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    # 720 s of jitter window: no single second gets more than a small share.
    assert len(per_second) > 600
    assert max(per_second.values()) < 50


def test_without_jitter_everything_lands_on_one_second() -> None:
    # The control for the test above: jitter is what spreads the load.
    rng = random.Random(1)
    times = {int(next_refresh_at(T0 + 7200, 7200, 300, 0.0, rng)) for _ in range(100)}
    assert len(times) == 1


@pytest.mark.parametrize(
    ("observed", "current", "expected"),
    [
        pytest.param(8000.0, 7200.0, 7200.0, id="later-death-teaches-nothing"),
        pytest.param(7200.0, 7200.0, 7200.0, id="on-time-death-teaches-nothing"),
        pytest.param(1900.0, 7200.0, 1800.0, id="snaps-down-to-30-min-setting"),
        pytest.param(3599.0, 7200.0, 1800.0, id="just-below-1h-snaps-to-30-min"),
        pytest.param(3700.0, 7200.0, 3600.0, id="just-past-1h-snaps-to-1h"),
        pytest.param(900.0, 7200.0, 900.0, id="exactly-15-min"),
        pytest.param(600.0, 7200.0, 7200.0, id="below-the-ladder-teaches-nothing"),
        pytest.param(10.0, 7200.0, 7200.0, id="a-killed-session-teaches-nothing"),
        pytest.param(60.0, 7200.0, 7200.0, id="never-the-old-60-s-floor"),
        pytest.param(1000.0, 900.0, 900.0, id="never-lengthens-the-estimate"),
    ],
)
def test_learn_from_early_death(observed: float, current: float, expected: float) -> None:
    assert learn_from_early_death(observed, current) == expected


@pytest.mark.parametrize(
    ("learned", "age_days", "expected"),
    [
        pytest.param(1800.0, 0.5, 1800.0, id="fresh-stays"),
        pytest.param(1800.0, 1.0, 3600.0, id="one-step-a-day"),
        pytest.param(1800.0, 2.5, 7200.0, id="two-steps"),
        pytest.param(900.0, 30.0, None, id="back-to-nothing-learned"),
    ],
)
def test_a_learned_estimate_grows_back(
    learned: float, age_days: float, expected: float | None
) -> None:
    assert (
        regrown_estimate(learned, age_days * 86400, configured=float("inf"), period=86400)
        == expected
    )


def test_regrowth_stops_at_the_configured_timeout() -> None:
    assert regrown_estimate(1800.0, 86400 * 5, configured=7200.0, period=86400) is None
    assert regrown_estimate(1800.0, 86400, configured=7200.0, period=86400) == 3600.0


def test_plan_expiry_is_the_shortest_lifetime_anchored_on_receipt() -> None:
    rng = random.Random(7)
    plan = plan_expiry(T0, configured=7200, introspected=3600, learned=None, margin=300, rng=rng)
    assert plan.lifetime == 3600
    assert plan.expires_at.timestamp() == T0 + 3600
    # 3/4 of the lifetime minus up to 10 % jitter, never before receipt.
    assert T0 + 3600 * 0.65 <= plan.next_refresh_at.timestamp() <= T0 + 3600 * 0.75


def test_plan_expiry_of_an_aged_import_refreshes_no_later_than_its_expiry() -> None:
    plan = plan_expiry(T0, configured=7200, age=7000, margin=300, rng=random.Random(1))
    assert plan.expires_at.timestamp() == T0 + 200
    assert plan.next_refresh_at.timestamp() <= T0 + 200
    dead = plan_expiry(T0, configured=7200, age=9000, margin=300, rng=random.Random(1))
    assert dead.expires_at.timestamp() == T0  # never "negative life"


def test_the_ladder_and_default_timeout_come_from_the_provider_catalog() -> None:
    provider = get_provider("salesforce")
    assert timeout_ladder(provider) == provider.session_timeout_ladder
    assert timeout_ladder(None) == DEFAULT_TIMEOUT_LADDER
    assert learn_from_early_death(1900.0, 7200.0, ladder=timeout_ladder(provider)) == 1800.0
    # A provider whose admins pick 20-minute steps snaps differently: the data decides.
    assert learn_from_early_death(1900.0, 7200.0, ladder=(1200, 2400)) == 1200.0
