"""The in-process write pause during maintenance (src/tokenkeep/orgs/write_pause.py)."""

from __future__ import annotations

from typing import Any

from tokenkeep.clock import ManualClock
from tokenkeep.orgs.write_pause import Admission, Outcome, WritePause

ORG = "00Dxx0000001gPL"
OTHER = "00Dxx0000002ABC"


class Events:
    """Collects what the pause emits (the outbox stands here)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    async def __call__(self, event_type: str, org_id: str, payload: dict[str, Any]) -> None:
        self.seen.append((event_type, org_id, payload))

    @property
    def types(self) -> list[str]:
        return [t for t, _, _ in self.seen]


async def _paused(clock: ManualClock, events: Events) -> WritePause:
    pause = WritePause(clock, 30.0, on_event=events)
    admission = pause.admit(ORG, "POST")
    assert admission is Admission.ALLOW
    await pause.record(ORG, admission, Outcome.MAINTENANCE, details={"connection_id": "c1"})
    return pause


async def test_a_maintenance_error_pauses_writes_of_that_org_only() -> None:
    clock, events = ManualClock(), Events()
    pause = await _paused(clock, events)
    assert events.types == ["org.maintenance_started"]
    assert events.seen[0][1] == ORG
    assert events.seen[0][2]["connection_id"] == "c1"
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        assert pause.admit(ORG, method) is Admission.REJECT
    for method in ("GET", "HEAD"):
        assert pause.admit(ORG, method) is Admission.ALLOW
    assert pause.admit(OTHER, "POST") is Admission.ALLOW
    assert pause.retry_after(ORG) == 30
    clock.advance(12.5)
    assert pause.retry_after(ORG) == 18


async def test_a_second_maintenance_error_does_not_emit_twice() -> None:
    clock, events = ManualClock(), Events()
    pause = await _paused(clock, events)
    await pause.record(ORG, Admission.ALLOW, Outcome.MAINTENANCE)
    assert events.types == ["org.maintenance_started"]


async def test_one_probe_per_interval_and_success_resumes_writes() -> None:
    clock, events = ManualClock(), Events()
    pause = await _paused(clock, events)
    clock.advance(29)
    assert pause.admit(ORG, "POST") is Admission.REJECT
    clock.advance(1)
    assert pause.admit(ORG, "POST") is Admission.PROBE
    # While the probe is in flight, other writes still wait.
    assert pause.admit(ORG, "PATCH") is Admission.REJECT
    assert pause.retry_after(ORG) >= 1
    await pause.record(ORG, Admission.PROBE, Outcome.SUCCESS)
    assert pause.admit(ORG, "PATCH") is Admission.ALLOW
    assert not pause.is_paused(ORG)
    assert events.types == ["org.maintenance_started", "org.maintenance_ended"]
    assert events.seen[1][2]["paused_seconds"] == 30.0


async def test_a_probe_that_meets_maintenance_keeps_the_pause_one_more_interval() -> None:
    clock, events = ManualClock(), Events()
    pause = await _paused(clock, events)
    clock.advance(30)
    assert pause.admit(ORG, "POST") is Admission.PROBE
    await pause.record(ORG, Admission.PROBE, Outcome.MAINTENANCE)
    assert pause.admit(ORG, "POST") is Admission.REJECT
    clock.advance(29.9)
    assert pause.admit(ORG, "POST") is Admission.REJECT
    clock.advance(0.1)
    assert pause.admit(ORG, "POST") is Admission.PROBE
    assert events.types == ["org.maintenance_started"]
    await pause.record(ORG, Admission.PROBE, Outcome.SUCCESS)
    assert events.seen[-1][2]["probes"] == 2


async def test_an_inconclusive_probe_waits_an_interval_an_abandoned_one_frees_the_slot() -> None:
    clock, events = ManualClock(), Events()
    pause = await _paused(clock, events)
    clock.advance(30)
    assert pause.admit(ORG, "POST") is Admission.PROBE
    await pause.record(ORG, Admission.PROBE, Outcome.INCONCLUSIVE)
    assert pause.admit(ORG, "POST") is Admission.REJECT
    clock.advance(30)
    assert pause.admit(ORG, "POST") is Admission.PROBE
    await pause.record(ORG, Admission.PROBE, Outcome.ABANDONED)
    assert pause.admit(ORG, "POST") is Admission.PROBE


async def test_a_probe_that_never_reports_back_expires() -> None:
    clock, events = ManualClock(), Events()
    pause = WritePause(clock, 30.0, on_event=events, probe_timeout_seconds=90.0)
    await pause.record(ORG, Admission.ALLOW, Outcome.MAINTENANCE)
    clock.advance(30)
    assert pause.admit(ORG, "POST") is Admission.PROBE
    clock.advance(89)
    assert pause.admit(ORG, "POST") is Admission.REJECT
    clock.advance(1)
    assert pause.admit(ORG, "POST") is Admission.PROBE


async def test_a_failing_event_callback_does_not_break_the_pause() -> None:
    async def broken(event_type: str, org_id: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("outbox down")

    clock = ManualClock()
    pause = WritePause(clock, 30.0, on_event=broken)
    await pause.record(ORG, Admission.ALLOW, Outcome.MAINTENANCE)
    assert pause.admit(ORG, "POST") is Admission.REJECT
