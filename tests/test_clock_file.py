"""FileClock: one fake time shared by several OS processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tokenkeep.clock import FileClock


def test_another_process_sees_the_advance(tmp_path: Path) -> None:
    clock = FileClock.create(tmp_path / "clock", start=1000.0)
    clock.advance(3600)
    code = (
        "import sys; from tokenkeep.clock import FileClock; "
        "c = FileClock(sys.argv[1]); print(c.time()); c.advance(5)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(clock.path)], capture_output=True, text=True, check=True
    )
    assert float(out.stdout) == 4600.0
    assert clock.time() == 4605.0
    assert clock.now().timestamp() == 4605.0


def test_time_only_moves_forward(tmp_path: Path) -> None:
    clock = FileClock.create(tmp_path / "clock", start=1000.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(999.0)


async def test_sleep_wakes_when_the_shared_time_passes(tmp_path: Path) -> None:
    clock = FileClock.create(tmp_path / "clock", start=0.0)
    other = FileClock(clock.path, poll_interval=0.001)
    sleeper = asyncio.create_task(other.sleep(60))
    await asyncio.sleep(0.02)
    assert not sleeper.done()  # time stands still until someone moves it
    clock.advance(59)
    await asyncio.sleep(0.02)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, timeout=5)
