"""``TOKENKEEP_OPERATION_LOG=0`` (bench/logpath.py's baseline): the gateway keeps no
operation-log entry; on by default."""

from __future__ import annotations

import pytest

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.observability.oplog import Entry, OperationQueue


def test_the_switch_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().operation_log is True
    monkeypatch.setenv("TOKENKEEP_OPERATION_LOG", "0")
    assert load_settings().operation_log is False


async def test_an_operation_log_that_is_off_writes_nothing() -> None:
    written: list[list[Entry]] = []

    async def sink(entries: list[Entry]) -> None:
        written.append(entries)

    queue = OperationQueue(sink, clock=ManualClock(), enabled=False)
    assert queue.put({"kind": "call", "outcome": "ok"}) is False
    assert queue.depth == 0
    assert queue.dropped == 0  # off is not a drop: no metric, no warning
    await queue.flush_all()
    assert written == []
