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

import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tokenkeep.client import AsyncClient, Client, Connection
    from tokenkeep.emulator import Emulator
    from tokenkeep.runtime import Gateway
    from tokenkeep.secret import Secret

try:  # strict-mode users need pytest-asyncio's decorator; auto mode accepts either
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - pytest-asyncio is a test dependency
    _async_fixture = pytest.fixture

__all__ = ["GatewayUnderTest", "running_gateway", "salesforce_emulator", "tokenkeep_gateway"]

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

#: The integration key :func:`running_gateway` registers for the emulator's connected app.
EMULATOR_INTEGRATION = "emulator"


class GatewayUnderTest:
    """A running tokenkeep gateway wired to a running Salesforce org emulator.

    ``base_url`` and ``api_key`` are what an app configures; ``emulator`` is the
    :class:`~tokenkeep.emulator.Emulator` (its admin API advances the clock, changes
    passwords, and logs every token grant); ``gateway`` is the in-process
    :class:`~tokenkeep.runtime.Gateway`.
    """

    def __init__(
        self, *, base_url: str, api_key: Secret, emulator: Emulator, gateway: Gateway
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.emulator = emulator
        self.gateway = gateway
        self.integration = EMULATOR_INTEGRATION

    def __repr__(self) -> str:
        return f"GatewayUnderTest({self.base_url!r})"

    def client(self, **options: Any) -> Client:
        """A synchronous SDK client (call it from a thread: ``asyncio.to_thread``)."""
        from tokenkeep.client import Client

        return Client(self.base_url, self.api_key, **options)

    def async_client(self, **options: Any) -> AsyncClient:
        """An asynchronous SDK client (``async with gw.async_client() as tk``)."""
        from tokenkeep.client import AsyncClient

        return AsyncClient(self.base_url, self.api_key, **options)

    def proxy_url(self, connection_id: str) -> str:
        """``<gateway>/c/<connection_id>``: the drop-in instance URL for unmodified clients."""
        return f"{self.base_url}/c/{connection_id}"

    async def connect(
        self,
        connection_id: str,
        *,
        org: int = 0,
        user: int = 0,
        metadata: dict[str, Any] | None = None,
    ) -> Connection:
        """Connect emulator user ``user`` of org ``org`` as ``connection_id`` (headless).

        The user "approves" through the emulator's admin API, the code is exchanged at the
        emulator's token endpoint, and the tokens are imported into the gateway
        (``POST /connections``), exactly as an app holding a token response would.
        """
        import httpx

        emu = self.emulator
        app = emu.apps[0]
        username = emu.orgs[org].users[user].username
        redirect_uri = app.redirect_uris[0]
        code = emu.admin.authorize(
            {
                "client_id": app.client_id,
                "username": username,
                "redirect_uri": redirect_uri,
                "scope": "api refresh_token",
            }
        )["code"]
        verify: Any = str(emu.ca_file) if emu.ca_file is not None else True
        async with httpx.AsyncClient(verify=verify) as http:
            answer = await http.post(
                f"{emu.login_url}/services/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "client_id": app.client_id,
                    "client_secret": app.client_secret,
                    "redirect_uri": redirect_uri,
                },
            )
        answer.raise_for_status()
        body = answer.json()
        async with self.async_client() as tk:
            return await tk.import_connection(
                self.integration,
                connection_id=connection_id,
                access_token=body["access_token"],
                refresh_token=body.get("refresh_token"),
                instance_url=body["instance_url"],
                id_url=body.get("id"),
                issued_at=body.get("issued_at"),
                metadata=metadata,
            )

    def grants(self, grant_type: str = "refresh_token") -> int:
        """How many token-endpoint calls with ``grant_type`` the emulator has seen."""
        return len(
            self.emulator.admin.requests(grant_type=grant_type, path="/services/oauth2/token")
        )

    def expire_sessions(self, org: int = 0) -> None:
        """Move the emulator's clock past org ``org``'s session timeout (tokens die)."""
        timeout = self.emulator.orgs[org].session_timeout_seconds
        self.emulator.admin.advance_clock(timeout + 60)


@contextlib.asynccontextmanager
async def running_gateway(
    data_dir: Path,
    *,
    orgs: int = 2,
    seed: int | None = None,
    tls: bool = False,
    **settings: Any,
) -> AsyncIterator[GatewayUnderTest]:
    """Start the emulator and a gateway (SQLite in ``data_dir``) for the ``async with`` block.

    ``settings`` override :class:`~tokenkeep.config.Settings` fields (the proactive
    scheduler is off unless ``scheduler_enabled=True``). The gateway trusts
    the emulator's loopback ``http://`` URLs (``allow_insecure_loopback``) and, with
    ``tls=True``, its CA. The emulator's connected app is registered as integration
    ``"emulator"`` with the org's session timeout.
    """
    from tokenkeep.client import AsyncClient
    from tokenkeep.config import load_settings
    from tokenkeep.emulator import Emulator
    from tokenkeep.runtime import Gateway
    from tokenkeep.secret import Secret
    from tokenkeep.server import ServerHandle, build_asgi_app

    api_key = Secret("tk_" + secrets.token_urlsafe(32))
    async with Emulator.running(orgs=orgs, seed=seed, tls=tls) as emu:
        options: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": f"sqlite:///{data_dir / 'tokenkeep.db'}",
            "secret_key": api_key.reveal(),
            "allow_insecure_loopback": True,
            "host": "127.0.0.1",
            "port": 8400,  # unused: the server below listens on a free port
            # Off by default: a proactive refresh at a moment of its own choosing would make
            # "exactly one refresh grant" assertions racy. Pass scheduler_enabled=True to test it.
            "scheduler_enabled": False,
            **({"ca_bundle": emu.ca_file} if emu.ca_file is not None else {}),
            **settings,
        }
        gateway = Gateway(load_settings(**options))
        server = ServerHandle(build_asgi_app(gateway), host="127.0.0.1", port=0)
        base_url = await server.start()
        try:
            app = emu.apps[0]
            async with AsyncClient(base_url, api_key) as tk:
                await tk.put_integration(
                    EMULATOR_INTEGRATION,
                    client_id=app.client_id,
                    client_secret=app.client_secret,
                    login_url=emu.login_url,
                    scopes=["api", "refresh_token"],
                    session_timeout_seconds=int(emu.orgs[0].session_timeout_seconds),
                )
            yield GatewayUnderTest(
                base_url=base_url, api_key=api_key, emulator=emu, gateway=gateway
            )
        finally:
            await server.stop()


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
