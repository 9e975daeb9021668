"""pytest plugin (entry point ``pytest11``): fixtures users can use in their own tests.

``salesforce_emulator`` starts the Salesforce org emulator on loopback for one test and
yields the running :class:`tokenkeep.emulator.Emulator`::

    async def test_login(salesforce_emulator):
        emu = salesforce_emulator
        app, user = emu.apps[0], emu.orgs[0].users[0]
        ...

Configure it per test with ``@pytest.mark.salesforce_emulator(orgs=3, tls=True, seed=7)``.
Importing this module has no side effects: the emulator is imported when the fixture runs.

``tokenkeep_gateway`` starts that emulator *and* a real tokenkeep gateway in-process (SQLite
in ``tmp_path``, a random loopback port) and yields a :class:`GatewayUnderTest`: its
``base_url``, ``api_key``, ``emulator``, SDK clients, and ``connect()`` to connect an
emulator user headlessly::

    async def test_query(tokenkeep_gateway):
        gw = tokenkeep_gateway
        await gw.connect("acme")
        async with gw.async_client() as tk:
            token = await tk.get_token("acme")

Options: ``@pytest.mark.tokenkeep_gateway(orgs=2, seed=None, tls=False)``. Sync SDK calls
(``Client``, simple-salesforce, requests) block: run them with ``asyncio.to_thread`` so the
gateway and the emulator keep serving in the test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tokenkeep.harness import EMULATOR_INTEGRATION, GatewayUnderTest, running_gateway

if TYPE_CHECKING:
    from tokenkeep.emulator import Emulator

try:  # strict-mode users need pytest-asyncio's decorator; auto mode accepts either
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio is a test dependency
    _async_fixture = pytest.fixture

__all__ = [
    "EMULATOR_INTEGRATION",
    "GatewayUnderTest",
    "running_gateway",
    "salesforce_emulator",
    "tokenkeep_gateway",
]

_OPTIONS = frozenset({"orgs", "apps", "seed", "tls", "host", "port"})


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``salesforce_emulator`` marker (options for the fixture)."""
    config.addinivalue_line(
        "markers",
        "salesforce_emulator(orgs=2, apps=1, seed=None, tls=False, host='127.0.0.1', port=0): "
        "options for the salesforce_emulator fixture",
    )
    config.addinivalue_line(
        "markers",
        "tokenkeep_gateway(orgs=2, seed=None, tls=False): options for the tokenkeep_gateway "
        "fixture",
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


# -- a gateway in front of the emulator ------------------------------------------------------

_GATEWAY_OPTIONS = frozenset({"orgs", "seed", "tls"})


@_async_fixture
async def tokenkeep_gateway(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[GatewayUnderTest]:
    """The emulator plus a tokenkeep gateway in-process, for one test."""
    marker = request.node.get_closest_marker("tokenkeep_gateway")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    unknown = set(options) - _GATEWAY_OPTIONS
    if unknown:
        raise pytest.UsageError(f"unknown tokenkeep_gateway options: {sorted(unknown)}")
    async with running_gateway(tmp_path / "tokenkeep", **options) as gw:
        yield gw
