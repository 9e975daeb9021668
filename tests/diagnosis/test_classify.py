"""The cause classifier, table-tested without sockets: each cause from the evidence that
proves it, and the look-alikes that must not be mistaken for one another."""

from __future__ import annotations

import pytest

from tokenkeep.diagnosis.classify import (
    Confidence,
    Evidence,
    RefreshResult,
    classify,
    host_of,
)
from tokenkeep.lifecycle.expiry import plausible_expiry
from tokenkeep.vocabulary import Cause, Status

INVALID = {
    "status": 401,
    "error_code": "INVALID_SESSION_ID",
    "message": "Session expired or invalid",
}
UNUSABLE = {
    "status": 401,
    "error_code": "INVALID_SESSION_ID",
    "message": "This session is not valid for use with the REST API",
}
HOST = "https://acme.my.salesforce.com"
LADDER = (900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)

CASES = [
    pytest.param(
        Evidence(
            **INVALID,
            refresh=RefreshResult.OK,
            replay_ok=True,
            token_age_seconds=7300,
            expected_lifetime_seconds=7200,
            issued_to_address="10.0.0.1",
            used_from_address="10.0.0.1",
            host=HOST,
            instance_url=HOST,
        ),
        Cause.EXPIRED,
        Confidence.HIGH,
        None,
        id="expired",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            refresh=RefreshResult.OK,
            replay_ok=True,
            token_age_seconds=100,
            expected_lifetime_seconds=7200,
            refused_token_active=False,
        ),
        Cause.EXPIRED,
        Confidence.MEDIUM,
        None,
        id="ended-early-is-expired-but-not-sure",
    ),
    pytest.param(
        Evidence(**INVALID, refresh=RefreshResult.REVOKED, refresh_reason="revoked:inactive_user"),
        Cause.REVOKED,
        Confidence.HIGH,
        Status.NEEDS_REAUTH,
        id="revoked-deactivated",
    ),
    pytest.param(
        Evidence(**INVALID, refresh=RefreshResult.TRANSIENT),
        Cause.UNKNOWN,
        Confidence.LOW,
        None,
        id="503-on-refresh-is-not-revoked",
    ),
    pytest.param(
        Evidence(
            status=400,
            error_code="URL_NOT_RESET",
            host="https://login.salesforce.com",
            instance_url="https://login.salesforce.com",
            refresh=RefreshResult.OK,
            refreshed_instance_url=HOST,
            replay_ok=True,
        ),
        Cause.WRONG_INSTANCE,
        Confidence.HIGH,
        None,
        id="wrong-instance-fixed-by-refresh",
    ),
    pytest.param(
        Evidence(
            status=400,
            error_code="URL_NOT_RESET",
            host="https://login.salesforce.com",
            instance_url="https://login.salesforce.com",
            refresh=RefreshResult.OK,
            refreshed_instance_url="https://login.salesforce.com",
            replay_ok=False,
        ),
        Cause.WRONG_INSTANCE,
        Confidence.HIGH,
        Status.ACTION_REQUIRED,
        id="wrong-instance-still-wrong",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            host="https://old.example",
            instance_url="https://old.example",
            refresh=RefreshResult.OK,
            refreshed_instance_url="https://new.example",
            replay_ok=True,
        ),
        Cause.WRONG_INSTANCE,
        Confidence.HIGH,
        None,
        id="instance-moved",
    ),
    pytest.param(
        Evidence(
            **UNUSABLE,
            refresh=RefreshResult.OK,
            replay_unusable=True,
            identity_ok=True,
            issued_to_address="10.0.0.1",
            used_from_address="10.0.0.1",
        ),
        Cause.API_CLIENT_CONTROL,
        Confidence.HIGH,
        Status.ACTION_REQUIRED,
        id="api-client-control",
    ),
    pytest.param(
        Evidence(**UNUSABLE),
        Cause.API_CLIENT_CONTROL,
        Confidence.MEDIUM,
        None,
        id="api-client-control-unprobed",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            issued_to_address="10.0.0.1",
            used_from_address="10.0.0.2",
            works_from_origin=True,
        ),
        Cause.IP_LOCKED,
        Confidence.HIGH,
        Status.ACTION_REQUIRED,
        id="ip-locked-probe-from-origin",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            issued_to_address="10.0.0.1",
            used_from_address="10.0.0.2",
            refused_token_active=True,
            refresh=RefreshResult.OK,
            replay_ok=True,
            token_age_seconds=40,
            expected_lifetime_seconds=7200,
        ),
        Cause.IP_LOCKED,
        Confidence.HIGH,
        Status.ACTION_REQUIRED,
        id="ip-locked-introspection",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            issued_to_address="10.0.0.1",
            used_from_address="10.0.0.2",
            refused_token_active=False,
            works_from_origin=False,
            refresh=RefreshResult.OK,
            replay_ok=True,
            token_age_seconds=7300,
            expected_lifetime_seconds=7200,
        ),
        Cause.EXPIRED,
        Confidence.HIGH,
        None,
        id="expired-and-ip-locked-at-once-is-expired",
    ),
    pytest.param(
        Evidence(status=503, error_code="INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"),
        Cause.MAINTENANCE,
        Confidence.HIGH,
        None,
        id="maintenance",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            refresh=RefreshResult.OK,
            replay_ok=True,
            token_age_seconds=300,
            expected_lifetime_seconds=7200,
            org_recent_session_errors=49,
        ),
        Cause.MAINTENANCE,
        Confidence.MEDIUM,
        None,
        id="org-wide-burst-is-not-expiry",
    ),
    pytest.param(
        Evidence(**INVALID, refresh=RefreshResult.OK, replay_ok=True, org_writes_paused=True),
        Cause.MAINTENANCE,
        Confidence.MEDIUM,
        None,
        id="session-flip-in-maintenance",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            refresh=RefreshResult.ACTION_REQUIRED,
            refresh_reason="ip_locked:login_ip_restricted",
        ),
        Cause.IP_LOCKED,
        Confidence.HIGH,
        Status.ACTION_REQUIRED,
        id="login-ip-restricted",
    ),
    pytest.param(
        Evidence(**INVALID, refresh=RefreshResult.OK, replay_ok=False),
        Cause.UNKNOWN,
        Confidence.LOW,
        None,
        id="fresh-token-refused-unexplained",
    ),
    pytest.param(
        Evidence(
            **INVALID,
            refresh=RefreshResult.OK,
            replay_ok=True,
            refused_token_active=True,
            issued_to_address="10.0.0.1",
            used_from_address="10.0.0.1",
        ),
        Cause.UNKNOWN,
        Confidence.LOW,
        None,
        id="alive-token-refused-from-its-own-address",
    ),
    pytest.param(
        Evidence(replay_ok=True),
        None,
        Confidence.HIGH,
        None,
        id="healthy",
    ),
]


@pytest.mark.parametrize(("evidence", "cause", "confidence", "status"), CASES)
def test_classify(
    evidence: Evidence, cause: Cause | None, confidence: Confidence, status: Status | None
) -> None:
    verdict = classify(evidence)
    assert (verdict.cause, verdict.confidence, verdict.status) == (cause, confidence, status)
    assert verdict.fix
    assert verdict.evidence  # every verdict says what it saw


def test_ip_lock_evidence_names_both_addresses() -> None:
    verdict = classify(
        Evidence(
            **INVALID,
            issued_to_address="127.0.0.1",
            used_from_address="127.0.0.3",
            works_from_origin=True,
        )
    )
    says = " ".join(f.says for f in verdict.evidence)
    assert "127.0.0.1" in says
    assert "127.0.0.3" in says
    assert "Lock sessions to the IP address" in verdict.fix
    assert str(verdict.reason).startswith("ip_locked")


def test_wrong_instance_evidence_names_both_hosts() -> None:
    verdict = classify(
        Evidence(
            status=400,
            error_code="URL_NOT_RESET",
            host="https://login.example",
            instance_url="https://login.example",
            refresh=RefreshResult.OK,
            refreshed_instance_url="https://login.example",
            replay_wrong_host=True,
        )
    )
    assert verdict.status is Status.ACTION_REQUIRED
    hosts = next(f for f in verdict.evidence if f.name == "hosts")
    assert hosts.value["called"] == "https://login.example"


def test_revoked_sub_reason_is_said_in_words() -> None:
    verdict = classify(
        Evidence(**INVALID, refresh=RefreshResult.REVOKED, refresh_reason="revoked:inactive_user")
    )
    assert str(verdict.reason) == "revoked:inactive_user"
    assert any("deactivated" in f.says for f in verdict.evidence)
    assert "connect link" in verdict.fix


def test_as_dict_is_the_wire_shape() -> None:
    doc = classify(Evidence(**UNUSABLE)).as_dict()
    assert set(doc) == {"cause", "confidence", "evidence", "fix", "recovered"}
    assert doc["cause"] == "api_client_control"
    assert {"name", "value", "says"} <= set(doc["evidence"][0])


@pytest.mark.parametrize(
    ("age", "step"),
    [
        (100, None),
        (899, None),
        (900, 900),
        (1300, 900),
        (1351, 900),
        (1800, 1800),
        (7300, 7200),
        (10801, 7200),
        (86400 * 2, 86400),
    ],
)
def test_plausible_expiry(age: float, step: int | None) -> None:
    assert plausible_expiry(age, LADDER) == step


def test_host_of() -> None:
    assert (
        host_of("https://Acme.my.salesforce.com/services/data") == "https://acme.my.salesforce.com"
    )
    assert host_of("http://127.0.0.1:8501") == "http://127.0.0.1:8501"
    assert host_of(None) is None
    assert host_of("not a url") is None
