"""Fixtures for the emulator's own tests (helpers live in emu_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tokenkeep.emulator import Emulator


@pytest.fixture
async def emu(salesforce_emulator: Emulator) -> Emulator:
    """The emulator, through the public pytest plugin fixture (2 orgs)."""
    return salesforce_emulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client calling from 127.0.0.1."""
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
