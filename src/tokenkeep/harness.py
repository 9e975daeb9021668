"""The Salesforce org emulator and a real gateway in one process, and a headless connect flow.

Shared by the pytest plugin (:mod:`tokenkeep.testing`) and ``tokenkeep demo``
(:mod:`tokenkeep.demo`); it imports no pytest, so the demo runs without it.

* :func:`running_gateway` starts the emulator and a gateway (the same
  :class:`~tokenkeep.runtime.Gateway` and :func:`~tokenkeep.server.build_asgi_app` that
  ``tokenkeep serve`` runs) on loopback and yields a :class:`GatewayUnderTest`;
* :func:`register_emulator_app` registers the emulator's connected app as an integration
  (and allows the gateway's callback URL, as an admin does once in Salesforce Setup);
* :func:`connect_through_flow` connects an emulator user through the gateway's hosted
  connect flow, with an HTTP client playing the user's browser on the emulator's HTML login
  and approval pages.
"""

from __future__ import annotations

import contextlib
import html
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urljoin, urlsplit

from tokenkeep.secret import Secret

if TYPE_CHECKING:
    from tokenkeep.client import AsyncClient, Client, Connection
    from tokenkeep.clock import Clock
    from tokenkeep.emulator import Emulator
    from tokenkeep.runtime import Gateway
    from tokenkeep.server import ServerHandle

__all__ = [
    "EMULATOR_INTEGRATION",
    "ConnectFlowError",
    "GatewayUnderTest",
    "connect_through_flow",
    "register_emulator_app",
    "running_gateway",
]

#: The integration key :func:`running_gateway` registers for the emulator's connected app.
EMULATOR_INTEGRATION = "emulator"

# The emulator's login and approval pages: hidden inputs and one POST form.
_HIDDEN_INPUT = re.compile(
    r'<input type="hidden" name="(?P<name>[^"]*)" value="(?P<value>[^"]*)">', re.IGNORECASE
)
_FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


class ConnectFlowError(RuntimeError):
    """The connect flow got an answer a browser would not continue from (the message says which)."""


def _expect(ok: bool, what: str, answer: Any = None) -> None:
    if not ok:
        detail = f" ({answer.status_code}: {answer.text[:200]})" if answer is not None else ""
        raise ConnectFlowError(f"connect flow: unexpected answer from {what}{detail}")


async def connect_through_flow(
    base_url: str,
    api_key: Secret,
    integration: str,
    connection_id: str,
    *,
    username: str,
    password: str,
    metadata: dict[str, Any] | None = None,
    verify: Any = True,
    read_timeout_seconds: float = 30.0,
) -> None:
    """Connect ``username`` as ``connection_id`` through the gateway's hosted connect flow.

    An app creates the connect session (``POST /connect/sessions``); a fresh HTTP client with
    no API key and its own cookies then plays the user's browser: connect link → authorize
    redirect (checked to carry a state and an S256 PKCE challenge) → the emulator's login and
    approval pages (either may be skipped) → the redirect back with a code →
    ``/oauth/callback``. ``verify`` is the browser's TLS trust (the emulator's CA file with
    ``tls=True``), ``read_timeout_seconds`` its timeout. Raises :class:`ConnectFlowError`
    on any other answer.
    """
    import httpx

    from tokenkeep.client import AsyncClient

    async with AsyncClient(base_url, api_key) as tk:
        link = await tk.create_connect_session(
            integration, connection_id=connection_id, metadata=metadata
        )
    url = urljoin(base_url + "/", link.url)
    async with httpx.AsyncClient(verify=verify, timeout=read_timeout_seconds) as browser:
        page = await browser.get(url)
        _expect(page.is_redirect, "the connect link", page)
        authorize_url = urljoin(url, page.headers["location"])
        query = parse_qs(urlsplit(authorize_url).query)
        _expect(
            query.get("code_challenge_method") == ["S256"] and bool(query.get("state")),
            "the connect link: the authorize URL carries no PKCE challenge or state",
        )
        page = await browser.get(authorize_url)
        for action in ("login", "approve"):
            if page.is_redirect:
                break
            _expect(page.status_code == 200, f"the emulator's {action} page", page)
            form = {
                html.unescape(m["name"]): html.unescape(m["value"])
                for m in _HIDDEN_INPUT.finditer(page.text)
            }
            if action == "login":
                form.update(username=username, password=password)
            else:
                form["decision"] = "allow"
            target = _FORM_ACTION.search(page.text)
            if target is None:
                raise ConnectFlowError(f"connect flow: no form on the emulator's {action} page")
            page = await browser.post(
                urljoin(authorize_url, html.unescape(target.group(1))), data=form
            )
        _expect(page.is_redirect, "the emulator's redirect back to the gateway", page)
        callback = urljoin(authorize_url, page.headers["location"])
        _expect("code=" in callback, "the emulator's redirect back to the gateway: no code")
        done = await browser.get(callback)
        _expect(done.status_code < 400, "the gateway's /oauth/callback", done)


async def register_emulator_app(
    emulator: Emulator, base_url: str, api_key: Secret, integration: str
) -> str:
    """Register the emulator's first connected app as ``integration``; return the callback URL.

    First what an admin does once in Salesforce Setup: allow the gateway's callback URL on the
    app. The integration gets the first org's session timeout.
    """
    from tokenkeep.client import AsyncClient

    app = emulator.apps[0]
    callback = f"{base_url}/oauth/callback"
    emulator.admin.patch_app(app.client_id, redirect_uris=[*app.redirect_uris, callback])
    async with AsyncClient(base_url, api_key) as tk:
        await tk.put_integration(
            integration,
            provider="salesforce",
            client_id=app.client_id,
            client_secret=app.client_secret,
            login_url=emulator.login_url,
            scopes=["api", "refresh_token"],
            session_timeout_seconds=int(emulator.orgs[0].session_timeout_seconds),
        )
    return callback


class GatewayUnderTest:
    """A running tokenkeep gateway wired to a running Salesforce org emulator.

    ``base_url`` and ``api_key`` are what an app configures; ``emulator`` is the
    :class:`~tokenkeep.emulator.Emulator` (its admin API advances the clock, changes
    passwords, and logs every token grant); ``gateway`` is the in-process
    :class:`~tokenkeep.runtime.Gateway`, ``server`` the HTTP server in front of it,
    ``data_dir`` the gateway's data dir, and ``clock`` the clock both sides share (``None``:
    each keeps its own).
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        emulator: Emulator,
        gateway: Gateway,
        server: ServerHandle | None = None,
        data_dir: Path | None = None,
        clock: Clock | None = None,
        integration: str = EMULATOR_INTEGRATION,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.emulator = emulator
        self.gateway = gateway
        self.server = server
        self.data_dir = data_dir
        self.clock = clock
        self.integration = integration

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

    @property
    def verify(self) -> Any:
        """What a client trusts for the emulator's URLs: its CA file with ``tls=True``."""
        ca = self.emulator.ca_file
        return str(ca) if ca is not None else True

    async def connect(
        self,
        connection_id: str,
        *,
        org: int = 0,
        user: int = 0,
        metadata: dict[str, Any] | None = None,
        via: Literal["flow", "import"] = "flow",
        instance_url: str | None = None,
    ) -> Connection:
        """Connect emulator user ``user`` of org ``org`` as ``connection_id`` (headless).

        ``via="flow"``: the gateway's hosted connect flow (:func:`connect_through_flow`).
        ``via="import"``: the user approves through the emulator's admin API, the code is
        exchanged at the emulator's token endpoint and the tokens are imported
        (``POST /connections``), as an app that already holds a token response would;
        ``instance_url`` then replaces the token answer's (to import a wrong one).
        """
        if via == "flow":
            emu_user = self.emulator.orgs[org].users[user]
            await connect_through_flow(
                self.base_url,
                self.api_key,
                self.integration,
                connection_id,
                username=emu_user.username,
                password=emu_user.password,
                metadata=metadata,
                verify=self.verify,
            )
            async with self.async_client() as tk:
                return await tk.get_connection(connection_id)
        return await self._connect_import(
            connection_id, org=org, user=user, metadata=metadata, instance_url=instance_url
        )

    async def _connect_import(
        self,
        connection_id: str,
        *,
        org: int,
        user: int,
        metadata: dict[str, Any] | None,
        instance_url: str | None = None,
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
        async with httpx.AsyncClient(verify=self.verify) as http:
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
                instance_url=instance_url or body["instance_url"],
                id_url=body.get("id"),
                issued_at=body.get("issued_at"),
                metadata=metadata,
            )

    def grants(self, grant_type: str = "refresh_token", org_id: str | None = None) -> int:
        """Token-endpoint calls with ``grant_type`` in the emulator's log (optionally one org)."""
        return len(
            self.emulator.admin.requests(
                grant_type=grant_type, org_id=org_id, path="/services/oauth2/token"
            )
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
    port: int = 0,
    clock: Clock | None = None,
    generated_key: bool = False,
    integration: str | None = EMULATOR_INTEGRATION,
    **settings: Any,
) -> AsyncIterator[GatewayUnderTest]:
    """Start the emulator and a gateway (SQLite in ``data_dir``) for the ``async with`` block.

    ``port``: the gateway's loopback port (0: a free one, picked before the start because the
    connect flow's callback URL must be known). ``clock``: one clock for the emulator and the
    gateway, so moving it moves both sides. The API key is one picked here and set as the
    secret key, or with ``generated_key=True`` the one the gateway creates at its first start
    on a fresh data dir, as ``tokenkeep serve`` does. ``integration``: the key to register the
    emulator's connected app under (:func:`register_emulator_app`; ``None``: not registered).

    ``settings`` override :class:`~tokenkeep.config.Settings` fields. Nothing from the
    ``TOKENKEEP_*`` environment leaks in (keys, egress address, webhook); the gateway trusts
    the emulator's loopback ``http://`` URLs (``allow_insecure_loopback``) and, with
    ``tls=True``, its CA; the proactive scheduler is off unless ``scheduler_enabled=True``.
    """
    from tokenkeep.config import load_settings
    from tokenkeep.emulator import Emulator
    from tokenkeep.errors import TokenkeepError
    from tokenkeep.runtime import Gateway
    from tokenkeep.server import ServerHandle, build_asgi_app, free_port

    api_key: Secret | None = None if generated_key else Secret("tk_" + secrets.token_urlsafe(32))
    async with Emulator.running(orgs=orgs, seed=seed, tls=tls, clock=clock) as emu:
        # Picked once the emulator's own ports are bound: it cannot take this one meanwhile.
        port = port or free_port()
        base_url = f"http://127.0.0.1:{port}"
        options: dict[str, Any] = {
            "data_dir": data_dir,
            "database_url": f"sqlite:///{data_dir / 'tokenkeep.db'}",
            "secret_key": api_key.reveal() if api_key is not None else None,
            "encryption_keys": None,
            "egress_address": None,
            "webhook_url": None,
            "ca_bundle": emu.ca_file,
            "allow_insecure_loopback": True,
            "host": "127.0.0.1",
            "port": port,
            "public_url": base_url,
            # Off by default: a proactive refresh at a moment of its own choosing would make
            # "exactly one refresh grant" counts racy. Pass scheduler_enabled=True to test it.
            "scheduler_enabled": False,
            **settings,
        }
        gateway = Gateway(load_settings(**options), clock=clock)
        # Built before the start: the proxy registers its services with the gateway.
        asgi_app = build_asgi_app(gateway)
        # Started here (the server's lifespan start is then a no-op) to get a generated key.
        new_key = await gateway.start()
        try:
            if api_key is None:
                if new_key is None:  # a fresh data dir always gets one; be explicit if not
                    raise TokenkeepError("the gateway did not create an API key.")
                api_key = new_key
            server = ServerHandle(asgi_app, host="127.0.0.1", port=port)
            base_url = await server.start()
            try:
                if integration is not None:
                    await register_emulator_app(emu, base_url, api_key, integration)
                yield GatewayUnderTest(
                    base_url=base_url,
                    api_key=api_key,
                    emulator=emu,
                    gateway=gateway,
                    server=server,
                    data_dir=data_dir,
                    clock=clock,
                    integration=integration or EMULATOR_INTEGRATION,
                )
            finally:
                await server.stop()
        finally:
            await gateway.stop()
