"""A real gateway and the emulator for the dashboard tests (SQLite in ``tmp_path``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tokenkeep.clock import OffsetClock
from tokenkeep.harness import GatewayUnderTest, running_gateway


@pytest.fixture(autouse=True)
def _no_tokenkeep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENKEEP_") and name != "TOKENKEEP_TEST_PG_DSN":
            monkeypatch.delenv(name)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    async with running_gateway(tmp_path / "tk", orgs=2, clock=OffsetClock()) as gw:
        yield gw
