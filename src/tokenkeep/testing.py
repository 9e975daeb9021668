"""pytest plugin (entry point ``pytest11``): fixtures users can use in their own tests.

``salesforce_emulator`` starts the Salesforce org emulator on loopback for one test and
yields the running :class:`tokenkeep.emulator.Emulator`::

    async def test_login(salesforce_emulator):
        emu = salesforce_emulator
        app, user = emu.apps[0], emu.orgs[0].users[0]
        ...

Configure it per test with ``@pytest.mark.salesforce_emulator(orgs=3, tls=True, seed=7)``.
Importing this module has no side effects: the emulator is imported when the fixture runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tokenkeep.emulator import Emulator

try:  # strict-mode users need pytest-asyncio's decorator; auto mode accepts either
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio is a test dependency
    _async_fixture = pytest.fixture

__all__ = ["salesforce_emulator"]

_OPTIONS = frozenset({"orgs", "apps", "seed", "tls", "host", "port"})


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``salesforce_emulator`` marker (options for the fixture)."""
    config.addinivalue_line(
        "markers",
        "salesforce_emulator(orgs=2, apps=1, seed=None, tls=False, host='127.0.0.1', port=0): "
        "options for the salesforce_emulator fixture",
    )


@_async_fixture
async def salesforce_emulator(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    """A running Salesforce org emulator (2 orgs, random loopback ports) for one test."""
    from tokenkeep.emulator import Emulator

    marker = request.node.get_closest_marker("salesforce_emulator")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    unknown = set(options) - _OPTIONS
    if unknown:
        raise pytest.UsageError(f"unknown salesforce_emulator options: {sorted(unknown)}")
    async with Emulator.running(**options) as emu:
        yield emu
