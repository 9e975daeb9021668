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
import html
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

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

# The emulator's login and approval pages: hidden inputs and one POST form.
_HIDDEN_INPUT = re.compile(
    r'<input type="hidden" name="(?P<name>[^"]*)" value="(?P<value>[^"]*)">', re.IGNORECASE
)
_FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


def _expect(ok: bool, what: str, answer: Any = None) -> None:
    if not ok:
        detail = f" ({answer.status_code}: {answer.text[:200]})" if answer is not None else ""
        raise RuntimeError(f"connect flow: unexpected answer from {what}{detail}")


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
        via: Literal["flow", "import"] = "flow",
    ) -> Connection:
        """Connect emulator user ``user`` of org ``org`` as ``connection_id`` (headless).

        ``via="flow"``: the gateway's hosted connect flow, with an HTTP client playing the
        user's browser (connect link → authorize redirect with state and PKCE → the
        emulator's login and approval pages → ``/oauth/callback``). ``via="import"``: the
        user approves through the emulator's admin API, the code is exchanged at the
        emulator's token endpoint and the tokens are imported (``POST /connections``), as
        an app that already holds a token response would.
        """
        if via == "flow":
            await self._connect_flow(connection_id, org=org, user=user, metadata=metadata)
            async with self.async_client() as tk:
                return await tk.get_connection(connection_id)
        return await self._connect_import(connection_id, org=org, user=user, metadata=metadata)

    async def _connect_flow(
        self, connection_id: str, *, org: int, user: int, metadata: dict[str, Any] | None
    ) -> None:
        import httpx

        emu_user = self.emulator.orgs[org].users[user]
        async with self.async_client() as tk:
            link = await tk.create_connect_session(
                self.integration, connection_id=connection_id, metadata=metadata
            )
        url = urljoin(self.base_url + "/", link.url)
        # A fresh "browser": no API key, its own cookies, trusting the emulator's CA.
        async with httpx.AsyncClient(verify=self._verify(), timeout=30) as browser:
            page = await browser.get(url)
            _expect(page.is_redirect, "the connect link", page)
            authorize_url = urljoin(url, page.headers["location"])
            page = await browser.get(authorize_url)
            for action in ("login", "approve"):  # either page may be skipped
                if page.is_redirect:
                    break
                _expect(page.status_code == 200, f"the emulator's {action} page", page)
                form = {
                    html.unescape(m["name"]): html.unescape(m["value"])
                    for m in _HIDDEN_INPUT.finditer(page.text)
                }
                if action == "login":
                    form.update(username=emu_user.username, password=emu_user.password)
                else:
                    form["decision"] = "allow"
                target = _FORM_ACTION.search(page.text)
                if target is None:
                    raise RuntimeError(f"connect flow: no form on the emulator's {action} page")
                page = await browser.post(
                    urljoin(authorize_url, html.unescape(target.group(1))), data=form
                )
            _expect(page.is_redirect, "the emulator's redirect back to the gateway", page)
            done = await browser.get(urljoin(authorize_url, page.headers["location"]))
            _expect(done.status_code < 400, "the gateway's /oauth/callback", done)

    def _verify(self) -> Any:
        ca = self.emulator.ca_file
        return str(ca) if ca is not None else True

    async def _connect_import(
        self, connection_id: str, *, org: int, user: int, metadata: dict[str, Any] | None
    ) -> Connection:
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
        async with httpx.AsyncClient(verify=self._verify()) as http:
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
    from tokenkeep.server import ServerHandle, build_asgi_app, free_port

    api_key = Secret("tk_" + secrets.token_urlsafe(32))
    # The connect flow's callback URL must be known before the start: pick the port first.
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    async with Emulator.running(orgs=orgs, seed=seed, tls=tls) as emu:
        options: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": f"sqlite:///{data_dir / 'tokenkeep.db'}",
            "secret_key": api_key.reveal(),
            # Nothing from the developer's TOKENKEEP_* environment leaks into the test.
            "encryption_keys": None,
            "egress_address": None,
            "webhook_url": None,
            "ca_bundle": emu.ca_file,
            "allow_insecure_loopback": True,
            "host": "127.0.0.1",
            "port": port,
            "public_url": base_url,
            # Off by default: a proactive refresh at a moment of its own choosing would make
            # "exactly one refresh grant" assertions racy. Pass scheduler_enabled=True to test it.
            "scheduler_enabled": False,
            **settings,
        }
        gateway = Gateway(load_settings(**options))
        server = ServerHandle(build_asgi_app(gateway), host="127.0.0.1", port=port)
        base_url = await server.start()
        try:
            app = emu.apps[0]
            # What an admin does once in Salesforce Setup: allow the gateway's callback URL.
            emu.admin.patch_app(
                app.client_id, redirect_uris=[*app.redirect_uris, f"{base_url}/oauth/callback"]
            )
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
