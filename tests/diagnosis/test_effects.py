"""tokenkeep.diagnosis.effects: the status change a diagnosis asks for (pure)."""

from __future__ import annotations

from tokenkeep.diagnosis.effects import status_change
from tokenkeep.diagnosis.evidence import Confidence, Diagnosis
from tokenkeep.store.diagnoses import StatusChange
from tokenkeep.vocabulary import Cause, EventType, Reason, Status


def _diagnosis(
    cause: Cause | None,
    *,
    status: Status | None = None,
    reason: Reason | None = None,
    recovered: bool = False,
) -> Diagnosis:
    return Diagnosis(cause, Confidence.HIGH, (), "fix", status, reason, recovered)


def test_a_broken_verdict_moves_an_active_connection_with_its_event() -> None:
    revoked = _diagnosis(Cause.REVOKED, status=Status.NEEDS_REAUTH, reason=Reason("revoked"))
    assert status_change(revoked) == StatusChange(
        status=Status.NEEDS_REAUTH,
        reason="revoked",
        expected=Status.ACTIVE,
        event=EventType.CONNECTION_NEEDS_REAUTH,
    )
    locked = _diagnosis(Cause.IP_LOCKED, status=Status.ACTION_REQUIRED)
    assert status_change(locked) == StatusChange(
        status=Status.ACTION_REQUIRED,
        reason=None,
        expected=Status.ACTIVE,
        event=EventType.CONNECTION_ACTION_REQUIRED,
    )


def test_a_recovery_with_no_cause_returns_to_active() -> None:
    assert status_change(_diagnosis(None, recovered=True)) == StatusChange(
        status=Status.ACTIVE,
        reason=None,
        expected=Status.ACTION_REQUIRED,
        event=EventType.CONNECTION_RECOVERED,
    )


def test_anything_else_leaves_the_status() -> None:
    assert status_change(_diagnosis(Cause.EXPIRED, recovered=True)) is None
    assert status_change(_diagnosis(Cause.UNKNOWN)) is None
