"""Table tests for classify_refresh_failure: one row per rule of issue 5."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from tokenkeep.oauth.classify import (
    IN_PROGRESS,
    backoff_delay,
    classify_refresh_failure,
    is_in_progress_error,
)
from tokenkeep.oauth.errors import IntegrationConfigError, OAuthError, UpstreamTransportError


def grant(desc: str = "expired access/refresh token", error: str = "invalid_grant") -> OAuthError:
    return OAuthError(status=400, error=error, error_description=desc)


@dataclass(frozen=True)
class Facts:
    changed: bool = False
    lease_expired: bool = False
    rotation: bool = False
    newer_conn: bool = False
    attempts: int = 1
    max_attempts: int = 3


CASES = [
    # id, error, facts, action, status, reason, sub_reason, event
    ("race-changed-token", grant(), Facts(changed=True),
     "use_newer_token", None, "race", None, None),
    ("race-wins-even-with-rotation-and-expired-lease", grant(),
     Facts(changed=True, rotation=True, lease_expired=True),
     "use_newer_token", None, "race", None, None),
    ("revoked-plain", grant(), Facts(),
     "needs_reauth", "needs_reauth", "revoked", "expired_or_revoked", "connection.needs_reauth"),
    ("revoked-password-change", grant("authentication failure"), Facts(),
     "needs_reauth", "needs_reauth", "revoked", "authentication_failure",
     "connection.needs_reauth"),
    ("inactive-user-description", grant("inactive user"), Facts(),
     "needs_reauth", "needs_reauth", "revoked", "inactive_user", "connection.needs_reauth"),
    ("inactive-org-description", grant("inactive organization"), Facts(),
     "needs_reauth", "needs_reauth", "revoked", "inactive_org", "connection.needs_reauth"),
    ("inactive-user-error-code", grant("user is not active", error="inactive_user"), Facts(),
     "needs_reauth", "needs_reauth", "revoked", "inactive_user", "connection.needs_reauth"),
    ("inactive-org-error-code", grant("org locked", error="inactive_org"), Facts(),
     "needs_reauth", "needs_reauth", "revoked", "inactive_org", "connection.needs_reauth"),
    ("token-cap-evicted", grant(), Facts(newer_conn=True),
     "needs_reauth", "needs_reauth", "revoked", "token_cap_evicted", "connection.needs_reauth"),
    ("rotation-lost", grant(), Facts(rotation=True, lease_expired=True),
     "needs_reauth", "needs_reauth", "revoked", "rotation_lost", "connection.needs_reauth"),
    ("rotation-lost-beats-cap-inference", grant(),
     Facts(rotation=True, lease_expired=True, newer_conn=True),
     "needs_reauth", "needs_reauth", "revoked", "rotation_lost", "connection.needs_reauth"),
    ("no-rotation-lost-without-rotation", grant(), Facts(lease_expired=True),
     "needs_reauth", "needs_reauth", "revoked", "expired_or_revoked", "connection.needs_reauth"),
    ("no-rotation-lost-with-live-lease", grant(), Facts(rotation=True),
     "needs_reauth", "needs_reauth", "revoked", "expired_or_revoked", "connection.needs_reauth"),
    ("explicit-description-beats-inference", grant("inactive user"),
     Facts(rotation=True, lease_expired=True),
     "needs_reauth", "needs_reauth", "revoked", "inactive_user", "connection.needs_reauth"),
    ("invalid-client", grant("invalid client credentials", error="invalid_client"), Facts(),
     "action_required", "action_required", "misconfigured", "invalid_client",
     "connection.action_required"),
    ("invalid-client-id", grant("client identifier invalid", error="invalid_client_id"),
     Facts(), "action_required", "action_required", "misconfigured", "invalid_client_id",
     "connection.action_required"),
    ("invalid-app-access",
     grant("user is not admin approved to access this app", error="invalid_app_access"),
     Facts(), "action_required", "action_required", "api_client_control", "app_not_approved",
     "connection.action_required"),
    ("ip-restricted", grant("IP restricted or invalid login hours"), Facts(),
     "action_required", "action_required", "ip_locked", "login_ip_restricted",
     "connection.action_required"),
    ("jwt-not-pre-authorized", grant("user hasn't approved this consumer"), Facts(),
     "action_required", "action_required", "api_client_control", "user_not_pre_authorized",
     "connection.action_required"),
    ("jwt-audience", grant("Audience validation failed"), Facts(),
     "action_required", "action_required", "misconfigured", "jwt_audience",
     "connection.action_required"),
    ("client-credentials-wrong-domain", grant("request not supported on this domain"), Facts(),
     "action_required", "action_required", "misconfigured", "not_my_domain",
     "connection.action_required"),
    ("unsupported-grant", grant("grant type not supported", error="unsupported_grant_type"),
     Facts(), "action_required", "action_required", "misconfigured", "unsupported_grant_type",
     "connection.action_required"),
    ("local-misconfiguration",
     IntegrationConfigError("invalid_configuration", "client_credentials needs My Domain"),
     Facts(), "action_required", "action_required", "misconfigured", "invalid_configuration",
     "connection.action_required"),
    ("no-refresh-token", IntegrationConfigError("no_refresh_token", "nothing to refresh with"),
     Facts(), "needs_reauth", "needs_reauth", "no_refresh_token", None,
     "connection.needs_reauth"),
    ("timeout-retries", UpstreamTransportError("t", kind="timeout"), Facts(attempts=1),
     "retry", None, "transient", "timeout", None),
    ("connection-error-retries", UpstreamTransportError("c", kind="connection"),
     Facts(attempts=2), "retry", None, "transient", "connection", None),
    ("5xx-retries", UpstreamTransportError("s", kind="http_status", status=503),
     Facts(attempts=2), "retry", None, "transient", "http_status", None),
    ("5xx-gives-error-at-max", UpstreamTransportError("s", kind="http_status", status=503),
     Facts(attempts=3), "error", "error", "transient", "http_status",
     "connection.refresh_failed"),
    ("transient-after-max-still-error", UpstreamTransportError("t", kind="timeout"),
     Facts(attempts=7), "error", "error", "transient", "timeout", "connection.refresh_failed"),
    ("transient-never-reauth-even-with-rotation-lost-facts",
     UpstreamTransportError("t", kind="timeout"),
     Facts(rotation=True, lease_expired=True, newer_conn=True),
     "retry", None, "transient", "timeout", None),
    ("unknown-refusal-retries", OAuthError(status=403, error="Bad_OAuth_Token"), Facts(),
     "retry", None, "unrecognized", "Bad_OAuth_Token", None),
    ("unknown-refusal-errors-at-max", OAuthError(status=400, error="weird_error"),
     Facts(attempts=3), "error", "error", "unrecognized", "weird_error",
     "connection.refresh_failed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "facts", "action", "status", "reason", "sub_reason", "event"),
    [pytest.param(*row[1:], id=row[0]) for row in CASES],
)
def test_classify_refresh_failure(  # noqa: PLR0917 (one parameter per table column)
    error: OAuthError | UpstreamTransportError,
    facts: Facts,
    action: str,
    status: str | None,
    reason: str,
    sub_reason: str | None,
    event: str | None,
) -> None:
    decision = classify_refresh_failure(
        error,
        refresh_token_changed=facts.changed,
        lease_expired_before=facts.lease_expired,
        rotation_enabled=facts.rotation,
        newer_connection_same_user_app=facts.newer_conn,
        attempts=facts.attempts,
        max_attempts=facts.max_attempts,
        rng=random.Random(7),
    )
    assert (decision.action, decision.status, decision.reason) == (action, status, reason)
    assert decision.sub_reason == sub_reason
    assert decision.event == event
    if action in ("retry", "error"):
        assert decision.retry_after is not None
        assert decision.retry_after > 0
    else:
        assert decision.retry_after is None


def test_no_transient_fault_ever_needs_reauth() -> None:
    rng = random.Random(1)
    errors = [
        UpstreamTransportError("x", kind=k, status=s)
        for k, s in (("timeout", None), ("connection", None), ("http_status", 500),
                     ("http_status", 503), ("http_status", 429), ("bad_response", 200))
    ]  # fmt: skip
    for err in errors:
        for attempts in range(1, 8):
            for flags in range(16):
                decision = classify_refresh_failure(
                    err,
                    refresh_token_changed=bool(flags & 1),
                    lease_expired_before=bool(flags & 2),
                    rotation_enabled=bool(flags & 4),
                    newer_connection_same_user_app=bool(flags & 8),
                    attempts=attempts,
                    max_attempts=3,
                    rng=rng,
                )
                assert decision.status in (None, "error")
                assert decision.action in ("retry", "error")


def test_needs_reauth_detail_names_the_provider_answer_but_no_token() -> None:
    decision = classify_refresh_failure(
        grant("expired access/refresh token"),
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=False,
        newer_connection_same_user_app=False,
        attempts=1,
        max_attempts=3,
    )
    assert decision.detail == "invalid_grant: expired access/refresh token"


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    rng = random.Random(42)
    for attempts, nominal in ((1, 2.0), (2, 4.0), (3, 8.0), (6, 64.0)):
        delays = [backoff_delay(attempts, rng, base=2.0, cap=900.0) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        # Jitter actually spreads the retries (not all the same value).
        assert max(delays) - min(delays) > nominal / 4


def test_backoff_is_capped_and_survives_huge_attempt_counts() -> None:
    rng = random.Random(3)
    assert all(450.0 <= backoff_delay(n, rng, cap=900.0) <= 900.0 for n in (20, 100, 10_000))


def test_backoff_is_reproducible_with_an_injected_rng() -> None:
    a = [backoff_delay(4, random.Random(9)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


def test_retry_after_header_is_honoured_within_the_cap() -> None:
    err = UpstreamTransportError("s", kind="http_status", status=503, retry_after=120.0)
    decision = classify_refresh_failure(
        err,
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=False,
        newer_connection_same_user_app=False,
        attempts=1,
        max_attempts=3,
        rng=random.Random(0),
        backoff_cap=60.0,
    )
    assert decision.retry_after == 60.0
    decision = classify_refresh_failure(
        err,
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=False,
        newer_connection_same_user_app=False,
        attempts=1,
        max_attempts=3,
        rng=random.Random(0),
    )
    assert decision.retry_after == 120.0


@pytest.mark.parametrize(
    ("error", "stored_reason", "proxy_cause"),
    [
        (
            grant("IP restricted or invalid login hours"),
            "ip_locked:login_ip_restricted",
            "ip_locked",
        ),
        (
            grant("user is not admin approved to access this app", error="invalid_app_access"),
            "api_client_control:app_not_approved",
            "api_client_control",
        ),
        (
            grant("user hasn't approved this consumer"),
            "api_client_control:user_not_pre_authorized",
            "api_client_control",
        ),
        (
            grant("invalid client credentials", error="invalid_client"),
            "misconfigured:invalid_client",
            "unknown",
        ),
        (
            grant("client identifier invalid", error="invalid_client_id"),
            "misconfigured:invalid_client_id",
            "unknown",
        ),
    ],
)
def test_action_required_reasons_start_with_a_cause_word_where_one_applies(
    error: OAuthError, stored_reason: str, proxy_cause: str
) -> None:
    from tokenkeep.errors import ActionRequiredError
    from tokenkeep.lifecycle.persist import status_reason_of
    from tokenkeep.vocabulary import CAUSE_WORDS

    decision = classify_refresh_failure(
        error,
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=False,
        newer_connection_same_user_app=False,
        attempts=1,
        max_attempts=3,
    )
    assert decision.status == "action_required"
    assert status_reason_of(decision) == stored_reason
    # What the proxy's Tokenkeep-Cause says: the reason if it is a cause word, else unknown.
    assert (decision.reason if decision.reason in CAUSE_WORDS else "unknown") == proxy_cause
    # The proxy reads it from the error the lifecycle raises (its ``cause`` attribute).
    assert ActionRequiredError("m", details={"cause": decision.reason}).cause == proxy_cause
    assert ActionRequiredError("m", reason=stored_reason).cause == proxy_cause


@pytest.mark.parametrize(
    ("description", "in_progress"),
    [
        ("token request is already being processed", True),
        ("Token request is already being processed.", True),
        ("expired access/refresh token", False),
        (None, False),
    ],
)
def test_the_concurrent_refresh_answer_is_recognised_in_the_stored_error(
    description: str | None, in_progress: bool
) -> None:
    """The stored ``last_error`` tells a forced refresh that Salesforce may still be
    answering another request for the token (it then waits, not replays)."""
    error = OAuthError(error="invalid_grant", error_description=description, status=400)
    assert is_in_progress_error(str(error)) is in_progress
    decision = classify_refresh_failure(
        error,
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=True,
        newer_connection_same_user_app=False,
        attempts=1,
        max_attempts=5,
        rng=random.Random(1),
    )
    assert (decision.sub_reason == IN_PROGRESS) is in_progress
    assert not is_in_progress_error(None)
    assert not is_in_progress_error("transient: token endpoint timed out (already being processed)")
