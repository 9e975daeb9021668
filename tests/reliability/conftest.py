"""Fixtures of the multi-process reliability tests: stores on the system clock (the clock
the worker processes run on)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.reliability.expired_connection import system_clock_store

from tokenkeep.crypto import Keyring
from tokenkeep.store import Store


@pytest.fixture
async def pg_store(pg_url: str, keyring: Keyring) -> AsyncIterator[Store]:
    """A migrated PostgreSQL store on the system clock."""
    async for store in system_clock_store(pg_url, keyring):
        yield store


@pytest.fixture
async def real_store(db_url: str, keyring: Keyring) -> AsyncIterator[Store]:
    """A migrated store on the system clock, on both engines."""
    async for store in system_clock_store(db_url, keyring):
        yield store
