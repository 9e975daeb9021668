"""The org's session timeout is learned only from evidence of expiry, through the proxy.

A proxied call meets a dead token; the proxy refreshes through the real coordinator and
replays. Only "the refresh worked AND the new token was accepted" means the old token
expired; a password change (refresh refused) or an IP lock / API Client Control (the new
token is refused too) must leave the org's estimate alone.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from lifecycle_support import Rig, connect

from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.proxy.app import ProxyApp

API_KEY = "tk_learning_test_key_0123456789"
PATH = "/c/{cid}/services/data/v60.0/limits"


async def _allow(key: str) -> bool:
    return key == API_KEY


async def _proxied_get(app: ProxyApp, connection_id: str) -> tuple[int, dict[str, str]]:
    """One GET through the proxy's ASGI interface: (status, response headers)."""
    path = PATH.format(cid=connection_id)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {API_KEY}".encode()), (b"host", b"t")],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers


async def _learned(rig: Rig, org_id: str) -> float | None:
    return await rig.coordinator.timeouts.read_learned_timeout(org_id)


def _proxy(rig: Rig) -> ProxyApp:
    return ProxyApp(rig.diagnoser(), _allow, rig.settings, rig.clock)


async def test_a_password_change_leaves_the_org_estimate_alone(rig: Rig) -> None:
    org = rig.emu.orgs[0]
    user = org.users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    await connect(rig.store, rig.emu, rig.client, org.users[1], "c2", clock=rig.clock)
    app = _proxy(rig)
    try:
        assert (await _proxied_get(app, "c1"))[0] == 200
        rig.advance(600)  # well before the predicted 7200 s
        rig.emu.admin.set_password(user.username, "n3w-Passw0rd!")
        status, headers = await _proxied_get(app, "c1")
        assert status == 401
        assert headers["tokenkeep-cause"] == "revoked"
        assert (await rig.store.connections.get("c1")).status == "needs_reauth"
        # The other connection of the org keeps its 2 h estimate.
        assert await _learned(rig, org.org_id) is None
        assert (await _proxied_get(app, "c2"))[0] == 200
    finally:
        await app.stop()


async def test_a_new_token_refused_at_once_leaves_the_org_estimate_alone(rig: Rig) -> None:
    """IP lock: sessions are locked to the address they were issued to. Our token client
    talks to the token endpoint from 127.0.0.2, the proxy calls from 127.0.0.1: the refresh
    works, and the replay with the brand-new token is refused again."""
    org = rig.emu.orgs[0]
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0)))
    client = TokenEndpointClient(http, clock=rig.clock)
    coordinator = RefreshCoordinator(rig.store, client, settings=rig.settings, clock=rig.clock)
    app = ProxyApp(coordinator, _allow, rig.settings, rig.clock)
    try:
        await connect(rig.store, rig.emu, client, org.users[0], "c1", clock=rig.clock)
        rig.advance(600)  # well before the predicted 7200 s
        rig.emu.admin.patch_org(org.org_id, {"lock_sessions_to_ip": True})
        status, headers = await _proxied_get(app, "c1")
        assert status == 401
        assert headers["tokenkeep-cause"] == "unknown"
        assert rig.refresh_grants() == 1  # the refresh itself worked
        assert await _learned(rig, org.org_id) is None
        # API Client Control: the app is not allowed; no refresh helps, nothing learned.
        rig.emu.admin.patch_org(
            org.org_id,
            {"lock_sessions_to_ip": False, "api_client_control": True, "allowed_client_ids": []},
        )
        rig.advance(60)
        status, headers = await _proxied_get(app, "c1")
        assert status == 401
        assert await _learned(rig, org.org_id) is None
    finally:
        await app.stop()
        await http.close()


async def test_a_real_early_death_shortens_the_org_estimate(rig: Rig) -> None:
    org = rig.emu.orgs[0]
    await connect(rig.store, rig.emu, rig.client, org.users[0], "c1", clock=rig.clock)
    app = _proxy(rig)
    try:
        rig.emu.admin.patch_org(org.org_id, {"session_timeout_seconds": 1800})
        rig.advance(1900)  # dead on the emulator; we predicted 7200 s
        status, _ = await _proxied_get(app, "c1")
        assert status == 200
        assert rig.refresh_grants() == 1
        learned = await _learned(rig, org.org_id)
        assert learned is not None
        assert learned < 7200
        assert learned <= 1900
    finally:
        await app.stop()


async def test_an_ip_lock_on_refresh_is_named_to_the_proxy_client(rig: Rig) -> None:
    """Salesforce refuses the refresh with "IP restricted": the relayed 401 says
    Tokenkeep-Cause: ip_locked; later calls get our 424 at once, nothing upstream."""
    org = rig.emu.orgs[0]
    await connect(rig.store, rig.emu, rig.client, org.users[0], "c1", clock=rig.clock)
    app = _proxy(rig)
    try:
        rig.emu.admin.patch_org(
            org.org_id, {"session_timeout_seconds": 600, "login_ip_ranges": ["10.0.0.0/8"]}
        )
        rig.advance(700)  # dead on the emulator, alive by our estimate: the proxy tries
        status, headers = await _proxied_get(app, "c1")
        assert status == 401
        assert headers["tokenkeep-cause"] == "ip_locked"
        stored = await rig.store.connections.get("c1")
        assert (stored.status, stored.status_reason) == (
            "action_required",
            "ip_locked:login_ip_restricted",
        )
        status, headers = await _proxied_get(app, "c1")
        assert status == 424
        assert headers["tokenkeep-cause"] == "ip_locked"
        assert rig.refresh_grants() == 1
    finally:
        await app.stop()
