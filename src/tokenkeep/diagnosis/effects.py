"""What a diagnosis changes once it is made (the last step of every diagnosis).

The verdict is stored on the connection with a ``diagnosis`` operation-log row; when it
says an admin or the user must act, ``status``/``status_reason`` are set and the webhook
event is queued in the same transaction (``store.diagnoses.record``), and a connection
proven to work again goes back to ``active`` (``connection.recovered``). A shorter org
session timeout is learned only when the verdict is ``expired`` with the evidence of an
expiry (same address, same host, the refused token no longer active, no maintenance, no
org-wide burst). A status change drops the coordinator's cached token.
"""

from __future__ import annotations

from tokenkeep.diagnosis.evidence import Diagnosis, Evidence, expiry_proven
from tokenkeep.lifecycle.cache import Rejection
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.observability.logging import get_logger
from tokenkeep.store import Store
from tokenkeep.store.diagnoses import StatusChange
from tokenkeep.vocabulary import Cause, EventType, Status

__all__ = ["DiagnosisEffects", "status_change"]

_log = get_logger("tokenkeep.diagnosis")

_EVENTS = {
    Status.ACTION_REQUIRED: EventType.CONNECTION_ACTION_REQUIRED,
    Status.NEEDS_REAUTH: EventType.CONNECTION_NEEDS_REAUTH,
}


def status_change(diagnosis: Diagnosis) -> StatusChange | None:
    """The status change a diagnosis asks for (None: leave the status as it is).

    A broken verdict moves an ``active`` connection to its status with its event; a
    recovery with no cause moves an ``action_required`` one back to ``active``.
    """
    if diagnosis.status is not None:
        return StatusChange(
            status=diagnosis.status,
            reason=str(diagnosis.reason) if diagnosis.reason else None,
            expected=Status.ACTIVE,
            event=_EVENTS.get(diagnosis.status),
        )
    if diagnosis.recovered and diagnosis.cause is None:
        return StatusChange(
            status=Status.ACTIVE,
            reason=None,
            expected=Status.ACTION_REQUIRED,
            event=EventType.CONNECTION_RECOVERED,
        )
    return None


class DiagnosisEffects:
    """Acts on a diagnosis: the learned timeout, the stored verdict, the status change."""

    def __init__(self, store: Store, coordinator: RefreshCoordinator) -> None:
        self._store = store
        self._coordinator = coordinator

    async def apply(
        self,
        connection_id: str,
        org_id: str | None,
        diagnosis: Diagnosis,
        evidence: Evidence,
        *,
        rejection: Rejection | None,
        status_code: int | None = None,
    ) -> None:
        """Act on ``diagnosis`` (see the module docstring). ``rejection`` is the proxy's
        refused token, the only one an expiry can be learned from."""
        learned: float | None = None
        if diagnosis.cause is Cause.EXPIRED and rejection is not None and expiry_proven(evidence):
            learned = await self._coordinator.learn_expiry(rejection)
        change = status_change(diagnosis)
        doc = diagnosis.as_dict()
        if learned is not None:
            doc["learned_session_timeout_seconds"] = learned
        changed = await self._store.diagnoses.record(
            connection_id,
            org_id,
            doc,
            change=change,
            outcome="recovered" if diagnosis.recovered else "failed",
            status_code=status_code,
        )
        if changed:
            self._coordinator.forget(connection_id)
        _log.info(
            "diagnosis",
            connection_id=connection_id,
            org_id=org_id,
            cause=diagnosis.cause.value if diagnosis.cause else None,
            confidence=diagnosis.confidence.value,
            recovered=diagnosis.recovered,
            status=change.status if changed and change else None,
        )
