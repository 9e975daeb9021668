"""The refresh decision, table-tested without sockets (tokenkeep.lifecycle.policy)."""

from __future__ import annotations

import pytest

from tokenkeep.errors import ActionRequiredError, NeedsReauthError
from tokenkeep.lifecycle.policy import (
    Decision,
    Need,
    Refresh,
    Refuse,
    Serve,
    Snapshot,
    Wait,
    decide,
    lives_for,
    refusal_error,
)
from tokenkeep.vocabulary import AuthMode, Cause, Status

NOW = 1_767_225_600.0


def snap(**changes: object) -> Snapshot:
    fields: dict[str, object] = {
        "version": 3,
        "status": "active",
        "status_reason": None,
        "expires_at": NOW + 3600,
        "refresh_attempts": 0,
        "next_refresh_at": NOW + 2700,
        "has_refresh_token": True,
        "auth_mode": AuthMode.OAUTH2,
    }
    fields.update(changes)
    return Snapshot(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("snapshot", "need", "expected"),
    [
        pytest.param(snap(), Need(min_ttl=60), Serve("fresh"), id="fresh-enough"),
        pytest.param(snap(expires_at=NOW + 30), Need(min_ttl=60), Refresh(), id="too-short"),
        pytest.param(snap(expires_at=None), Need(min_ttl=1), Refresh(), id="expiry-unknown"),
        pytest.param(snap(), Need(newer_than=3), Refresh(), id="forced-same-version"),
        pytest.param(snap(version=4), Need(newer_than=3), Serve("fresh"), id="already-newer"),
        pytest.param(
            snap(status="needs_reauth", status_reason="revoked:inactive_user"),
            Need(min_ttl=60),
            Refuse(Status.NEEDS_REAUTH, "revoked:inactive_user"),
            id="needs-reauth-refused",
        ),
        pytest.param(
            snap(status="action_required", status_reason="ip_locked:login_ip_restricted"),
            Need(newer_than=3, ignore_backoff=True),
            Refuse(Status.ACTION_REQUIRED, "ip_locked:login_ip_restricted"),
            id="action-required-refused-even-when-forced",
        ),
        pytest.param(
            snap(expires_at=NOW + 10, refresh_attempts=2, next_refresh_at=NOW + 120),
            Need(min_ttl=60),
            Serve("backing_off"),
            id="backing-off-token-alive",
        ),
        pytest.param(
            snap(expires_at=NOW - 1, refresh_attempts=2, next_refresh_at=NOW + 120),
            Need(min_ttl=60),
            Wait(NOW + 120, 2),
            id="backing-off-token-dead",
        ),
        pytest.param(
            snap(expires_at=NOW + 10, refresh_attempts=2, next_refresh_at=NOW + 120),
            Need(newer_than=3),
            Wait(NOW + 120, 2),
            id="backing-off-rejected-token",
        ),
        pytest.param(
            snap(expires_at=NOW - 1, refresh_attempts=2, next_refresh_at=NOW + 120),
            Need(newer_than=3, ignore_backoff=True),
            Refresh(),
            id="scheduler-ignores-backoff",
        ),
        pytest.param(
            snap(expires_at=NOW - 1, refresh_attempts=2, next_refresh_at=NOW - 5),
            Need(min_ttl=60),
            Refresh(),
            id="backoff-over",
        ),
        pytest.param(
            snap(expires_at=NOW + 10, has_refresh_token=False),
            Need(min_ttl=60),
            Serve("no_refresh_token"),
            id="import-without-refresh-token-served-until-expiry",
        ),
        pytest.param(
            snap(expires_at=NOW - 1, has_refresh_token=False),
            Need(min_ttl=60),
            Refresh(),
            id="import-without-refresh-token-expired",
        ),
        pytest.param(
            snap(expires_at=NOW + 10, has_refresh_token=False, auth_mode=AuthMode.JWT_BEARER),
            Need(min_ttl=60),
            Refresh(),
            id="jwt-bearer-mints-again",
        ),
    ],
)
def test_decide(snapshot: Snapshot, need: Need, expected: Decision) -> None:
    assert decide(snapshot, need, NOW) == expected


def test_under_the_lease_only_status_and_need_count() -> None:
    backing_off = snap(expires_at=NOW + 10, refresh_attempts=2, next_refresh_at=NOW + 120)
    assert decide(backing_off, Need(min_ttl=60), NOW, under_lease=True) == Refresh()
    no_token = snap(expires_at=NOW + 10, has_refresh_token=False)
    assert decide(no_token, Need(min_ttl=60), NOW, under_lease=True) == Refresh()
    assert decide(snap(), Need(min_ttl=60), NOW, under_lease=True) == Serve("fresh")


@pytest.mark.parametrize(
    ("expires_at", "seconds", "expected"),
    [(NOW + 60, 60, True), (NOW + 59.9, 60, False), (None, 0, False), (NOW - 1, 0, False)],
)
def test_lives_for_is_the_one_ttl_check(
    expires_at: float | None, seconds: float, expected: bool
) -> None:
    assert lives_for(expires_at, seconds, NOW) is expected


def test_refusals_carry_typed_reasons_and_causes() -> None:
    revoked = refusal_error("c1", Status.NEEDS_REAUTH, "revoked:inactive_user")
    assert isinstance(revoked, NeedsReauthError)
    assert revoked.cause is Cause.REVOKED
    assert str(revoked.reason) == "revoked:inactive_user"
    locked = refusal_error("c1", Status.ACTION_REQUIRED, "ip_locked:login_ip_restricted")
    assert isinstance(locked, ActionRequiredError)
    assert locked.cause is Cause.IP_LOCKED
    assert locked.details["cause"] == "ip_locked"
    misconfigured = refusal_error("c1", Status.ACTION_REQUIRED, "misconfigured:bad_secret")
    assert misconfigured.cause is Cause.UNKNOWN  # not a cause word
