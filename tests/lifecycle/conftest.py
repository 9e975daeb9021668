"""Fixtures for the lifecycle tests: the store on both engines, the emulator on the SAME
manual clock (so one ``advance`` moves provider and gateway time together), a token client
and a coordinator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from lifecycle_support import Rig, register_integration, settings_for, token_client

from tokenkeep.clock import ManualClock
from tokenkeep.emulator import Emulator
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.observability.logging import configure_logging
from tokenkeep.store import Store


@pytest.fixture(autouse=True)
def _fresh_logging() -> None:
    """Log to this test's stderr (an earlier CLI test may have left a closed stream)."""
    configure_logging("console", "INFO")


@pytest.fixture
async def rig(store: Store, clock: ManualClock, db_url: str) -> AsyncIterator[Rig]:
    """Emulator (2 orgs) + store + coordinator, integration ``sf`` registered."""
    async with Emulator.running(orgs=2, clock=clock) as emu, token_client(clock) as client:
        await register_integration(store, emu)
        settings = settings_for(db_url)
        coordinator = RefreshCoordinator(store, client, settings=settings, clock=clock)
        yield Rig(
            store=store,
            emu=emu,
            client=client,
            coordinator=coordinator,
            settings=settings,
            clock=clock,
        )
