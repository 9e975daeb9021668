"""The hosted connect flow end to end: gateway (ASGI) + emulator (real sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx
import pytest
from aiohttp import web
from sqlalchemy import func, select

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.emulator import Emulator
from tokenkeep.observability.logging import configure_logging
from tokenkeep.runtime import Gateway
from tokenkeep.server import build_asgi_app
from tokenkeep.store.models import ConnectionRow, OutboxRow

SECRET = "tk_connect_flow_test_key_0123456789"
# The emulator's app registers this redirect URI; it is the gateway's default base URL.
CALLBACK = "http://127.0.0.1:8400/oauth/callback"


@dataclass
class Flow:
    gateway: Gateway
    http: httpx.AsyncClient
    emu: Emulator
    clock: ManualClock

    async def start(self, **body: Any) -> str:
        """POST /connect/sessions → the connect URL's path."""
        r = await self.http.post("/connect/sessions", json={"integration": "sf", **body})
        assert r.status_code == 201, r.text
        url = r.json()["url"]
        assert url.startswith("http://127.0.0.1:8400/connect/")
        return urlsplit(url).path

    async def authorize_params(self, path: str) -> dict[str, str]:
        """Open the connect link: the 302 to the provider's authorize URL, parsed."""
        r = await self.http.get(path, headers={"Authorization": ""})
        assert r.status_code == 302, r.text
        location = r.headers["location"]
        assert location.startswith(self.emu.login_url + "/services/oauth2/authorize?")
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    def consent(self, params: dict[str, str], username: str, **override: str) -> dict[str, str]:
        """The user approves on the provider's page: the callback's query parameters."""
        answer = self.emu.admin.authorize(
            {
                "client_id": params["client_id"],
                "username": username,
                "redirect_uri": params["redirect_uri"],
                "scope": params.get("scope", "api refresh_token"),
                "state": params["state"],
                "code_challenge": override.get("code_challenge", params["code_challenge"]),
            }
        )
        return {k: v[0] for k, v in parse_qs(urlsplit(answer["redirect_url"]).query).items()}

    async def callback(self, query: dict[str, str]) -> httpx.Response:
        return await self.http.get("/oauth/callback", params=query, headers={"Authorization": ""})

    async def count(self, model: Any) -> int:
        async with self.gateway.store.db.read() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    def code_grants(self) -> int:
        return len(self.emu.admin.requests(grant_type="authorization_code"))


@pytest.fixture
async def flow(tmp_path: Path, db_url: str) -> AsyncIterator[Flow]:
    """The flow on both engines (``db_url``: SQLite and PostgreSQL)."""
    # An earlier test (a CLI run) may have left structlog printing to a closed stream.
    configure_logging("console", "INFO")
    clock = ManualClock()
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key=SECRET,
        allow_insecure_loopback=True,
        scheduler_enabled=False,
        connect_return_urls="https://app.example",  # the app the tests send browsers back to
    )
    async with Emulator.running(orgs=2, clock=clock) as emu:
        gateway = Gateway(settings, clock=clock)
        await gateway.start()
        app = emu.app_config
        await gateway.store.integrations.put(
            "sf",
            provider="salesforce",
            client_id=app.client_id,
            client_secret=app.client_secret,
            login_url=emu.login_url,
            scopes=["api", "refresh_token"],
        )
        transport = httpx.ASGITransport(app=build_asgi_app(gateway))
        try:
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://127.0.0.1:8400",
                headers={"Authorization": f"Bearer {SECRET}"},
            ) as http:
                yield Flow(gateway, http, emu, clock)
        finally:
            await gateway.stop()


async def test_connect_end_to_end_stores_a_working_connection(flow: Flow) -> None:
    org = flow.emu.orgs[0]
    user = org.users[1]
    path = await flow.start(metadata={"tenant": "t1"}, return_url="https://app.example/done?x=1")
    params = await flow.authorize_params(path)
    assert params["redirect_uri"] == CALLBACK
    assert params["code_challenge_method"] == "S256"
    assert len(params["state"]) >= 32
    r = await flow.callback(flow.consent(params, user.username))
    assert r.status_code == 302
    back = urlsplit(r.headers["location"])
    assert (back.scheme, back.netloc, back.path) == ("https", "app.example", "/done")
    query = parse_qs(back.query)
    assert query["x"] == ["1"]
    assert query["status"] == ["connected"]
    connection_id = query["connection_id"][0]
    conn = await flow.gateway.store.connections.get(connection_id, with_credentials=True)
    assert (conn.org_id, conn.user_id, conn.username) == (org.org_id, user.user_id, user.username)
    assert conn.metadata == {"tenant": "t1"}
    assert conn.instance_url == org.instance_url
    assert conn.expires_at is not None
    assert conn.has_refresh_token
    async with flow.gateway.store.db.read() as session:
        events = list(await session.scalars(select(OutboxRow.event_type)))
    assert events == ["connection.created"]
    # The stored grant works: a forced refresh through the coordinator succeeds.
    token = await flow.gateway.coordinator.refresh(connection_id)
    assert token.version == 2


async def test_without_return_url_a_plain_success_page(flow: Flow) -> None:
    params = await flow.authorize_params(await flow.start())
    r = await flow.callback(flow.consent(params, flow.emu.orgs[0].users[0].username))
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "Connected" in r.text
    assert r.headers["cache-control"] == "no-store"


async def test_a_replayed_callback_is_refused_and_stores_nothing_new(flow: Flow) -> None:
    params = await flow.authorize_params(await flow.start())
    callback = flow.consent(params, flow.emu.orgs[0].users[0].username)
    assert (await flow.callback(callback)).status_code == 200
    replay = await flow.callback(callback)
    assert replay.status_code == 410
    assert "already been used" in replay.text
    assert flow.code_grants() == 1  # the replay never reached the token endpoint
    assert await flow.count(ConnectionRow) == 1


async def test_concurrent_callbacks_with_one_state_exchange_the_code_once(flow: Flow) -> None:
    params = await flow.authorize_params(await flow.start())
    callback = flow.consent(params, flow.emu.orgs[0].users[0].username)
    answers = await asyncio.gather(*(flow.callback(callback) for _ in range(8)))
    assert sorted(r.status_code for r in answers) == [200] + [410] * 7
    assert all("already been used" in r.text for r in answers if r.status_code == 410)
    assert flow.code_grants() == 1  # exactly one code exchange reached the provider
    assert await flow.count(ConnectionRow) == 1


async def test_an_insecure_instance_url_gives_a_clear_page_and_stores_nothing(
    flow: Flow,
) -> None:
    # A gateway that does not allow plain http to loopback: the emulator's org address
    # (http://127.0.0.1:...) may not receive tokens.
    gateway = flow.gateway
    gateway.settings = gateway.settings.model_copy(update={"allow_insecure_loopback": False})
    params = await flow.authorize_params(await flow.start())
    r = await flow.callback(flow.consent(params, flow.emu.orgs[0].users[0].username))
    assert r.status_code == 400
    assert "https://" in r.text
    assert "Nothing was stored" in r.text
    assert await flow.count(ConnectionRow) == 0


async def test_a_failing_introspection_falls_back_to_the_session_timeout(flow: Flow) -> None:
    """Introspection answers 503 (a relay in front of the emulator): the connection is
    stored anyway, expiring at issued_at + the integration's session timeout."""
    emu_url = flow.emu.login_url
    http = aiohttp.ClientSession()

    async def relay(request: web.Request) -> web.Response:
        if request.path.startswith("/services/oauth2/introspect"):
            return web.Response(status=503, text="Service Unavailable")
        form = dict(await request.post())
        async with http.request(request.method, emu_url + request.path_qs, data=form) as up:
            body = await up.read()
            return web.Response(status=up.status, body=body, content_type=up.content_type)

    server = web.Application()
    server.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(server)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    relay_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        app = flow.emu.app_config
        await flow.gateway.store.integrations.put(
            "sf",
            provider="salesforce",
            client_id=app.client_id,
            client_secret=app.client_secret,
            login_url=relay_url,
            scopes=["api", "refresh_token"],
            session_timeout_seconds=5400,
        )
        r = await flow.http.get(await flow.start(), headers={"Authorization": ""})
        assert r.status_code == 302
        params = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        r = await flow.callback(flow.consent(params, flow.emu.orgs[0].users[0].username))
        assert r.status_code == 200, r.text
        assert await flow.count(ConnectionRow) == 1
        page = await flow.gateway.store.connections.list(limit=10)
        conn = page.items[0]
        assert conn.issued_at is not None
        assert conn.expires_at is not None
        assert (conn.expires_at - conn.issued_at).total_seconds() == 5400
    finally:
        await runner.cleanup()
        await http.close()


async def test_a_used_connect_link_cannot_be_opened_again(flow: Flow) -> None:
    path = await flow.start()
    params = await flow.authorize_params(path)
    await flow.callback(flow.consent(params, flow.emu.orgs[0].users[0].username))
    r = await flow.http.get(path)
    assert r.status_code == 410


async def test_a_pkce_failure_stores_nothing(flow: Flow) -> None:
    params = await flow.authorize_params(await flow.start())
    # The code gets bound to a challenge that is not ours: our verifier cannot redeem it.
    query = flow.consent(params, flow.emu.orgs[0].users[0].username, code_challenge="A" * 43)
    r = await flow.callback(query)
    assert r.status_code == 400
    assert "did not issue a token" in r.text
    assert "invalid code verifier" in r.text
    assert flow.code_grants() == 1
    assert await flow.count(ConnectionRow) == 0
    assert await flow.count(OutboxRow) == 0


async def test_denied_consent_and_unknown_state_give_a_clear_page(flow: Flow) -> None:
    params = await flow.authorize_params(await flow.start())
    denied = await flow.callback(
        {
            "state": params["state"],
            "error": "access_denied",
            "error_description": "end-user denied authorization",
        }
    )
    assert denied.status_code == 400
    assert "not approved" in denied.text
    forged = await flow.callback({"state": "x" * 43, "code": "stolen"})
    assert forged.status_code == 400
    assert "does not belong to any connect session" in forged.text
    assert flow.code_grants() == 0
    assert await flow.count(ConnectionRow) == 0


async def test_an_expired_connect_link(flow: Flow) -> None:
    path = await flow.start()
    flow.clock.advance(flow.gateway.settings.connect_session_ttl_seconds + 1)
    r = await flow.http.get(path)
    assert r.status_code == 410
    assert "expired" in r.text


async def test_token_endpoint_failure_stores_nothing(flow: Flow) -> None:
    params = await flow.authorize_params(await flow.start())
    query = flow.consent(params, flow.emu.orgs[0].users[0].username)
    flow.emu.admin.add_fault({"target": "token", "kind": "error", "status": 503, "count": 1})
    r = await flow.callback(query)
    assert r.status_code == 400
    assert "token endpoint failed" in r.text
    assert await flow.count(ConnectionRow) == 0


async def test_connecting_the_same_org_user_again_updates_the_connection(flow: Flow) -> None:
    user = flow.emu.orgs[0].users[0]
    ids = []
    for _ in range(2):
        params = await flow.authorize_params(await flow.start(return_url="https://app.example/"))
        r = await flow.callback(flow.consent(params, user.username))
        ids.append(parse_qs(urlsplit(r.headers["location"]).query)["connection_id"][0])
    assert ids[0] == ids[1]
    assert await flow.count(ConnectionRow) == 1
    conn = await flow.gateway.store.connections.get(ids[0])
    assert conn.version == 2
    # Configurable: with the setting off, a second connect adds a connection.
    flow.gateway.settings.connect_update_existing = False
    params = await flow.authorize_params(await flow.start())
    await flow.callback(flow.consent(params, user.username))
    assert await flow.count(ConnectionRow) == 2


async def test_reconnecting_a_revoked_connection_recovers_it(flow: Flow) -> None:
    user = flow.emu.orgs[0].users[0]
    params = await flow.authorize_params(await flow.start(connection_id="acme"))
    await flow.callback(flow.consent(params, user.username))
    await flow.gateway.store.connections.set_status("acme", "needs_reauth", reason="revoked")
    params = await flow.authorize_params(await flow.start(connection_id="acme"))
    await flow.callback(flow.consent(params, user.username))
    conn = await flow.gateway.store.connections.get("acme")
    assert (conn.status, conn.status_reason) == ("active", None)
    async with flow.gateway.store.db.read() as session:
        events = list(await session.scalars(select(OutboxRow.event_type).order_by(OutboxRow.id)))
    assert events == ["connection.created", "connection.recovered"]


async def test_connect_sessions_need_a_key_and_an_oauth2_integration(flow: Flow) -> None:
    r = await flow.http.post(
        "/connect/sessions", json={"integration": "sf"}, headers={"Authorization": ""}
    )
    assert r.status_code == 401
    r = await flow.http.post("/connect/sessions", json={"integration": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
    r = await flow.http.post("/connect/sessions", json={"integration": "sf", "extra": 1})
    assert r.status_code == 422


async def test_a_jwt_bearer_link_connects_without_a_consent_page(flow: Flow) -> None:
    app, user = flow.emu.app_config, flow.emu.orgs[0].users[0]  # pre-authorized for JWT
    await flow.gateway.store.integrations.put(
        "jwt",
        provider="salesforce",
        client_id=app.client_id,
        login_url=flow.emu.login_url,
        auth_mode="jwt_bearer",
        private_key=app.private_key_pem,
        username=user.username,
    )
    r = await flow.http.post(
        "/connect/sessions", json={"integration": "jwt", "return_url": "https://app.example/"}
    )
    path = urlsplit(r.json()["url"]).path
    opened = await flow.http.get(path, headers={"Authorization": ""})
    assert opened.status_code == 302
    query = parse_qs(urlsplit(opened.headers["location"]).query)
    conn = await flow.gateway.store.connections.get(query["connection_id"][0])
    assert (conn.username, conn.has_refresh_token) == (user.username, False)
    assert (await flow.http.get(path, headers={"Authorization": ""})).status_code == 410
    assert await flow.count(ConnectionRow) == 1
