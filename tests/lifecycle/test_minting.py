"""JWT bearer and client credentials: no refresh token, so "refresh" means minting again."""

from __future__ import annotations

import asyncio

import httpx
from lifecycle_support import Rig

from tokenkeep.lifecycle.connect import ConnectFlow

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


async def _works(instance_url: str, token: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(
            instance_url + "/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {token}"},
        )
    return r.status_code == 200


def _flow(rig: Rig) -> ConnectFlow:
    return ConnectFlow(
        rig.store, rig.client, settings=rig.settings, clock=rig.clock, coordinator=rig.coordinator
    )


async def test_jwt_bearer_connection_is_minted_again_once_for_many_callers(rig: Rig) -> None:
    app, user = rig.emu.app_config, rig.emu.orgs[0].users[0]  # pre-authorized for JWT
    await rig.store.integrations.put(
        "jwt",
        provider="salesforce",
        client_id=app.client_id,
        login_url=rig.emu.login_url,
        auth_mode="jwt_bearer",
        private_key=app.private_key_pem,
        username=user.username,
    )
    result = await _flow(rig).connect_direct("jwt", connection_id="j1")
    conn = await rig.store.connections.get("j1")
    assert (conn.org_id, conn.username, conn.has_refresh_token) == (
        result.org_id,
        user.username,
        False,
    )
    minted = len(rig.emu.admin.requests(grant_type=JWT_GRANT))
    rig.advance(7300)
    tokens = await asyncio.gather(*(rig.coordinator.fresh_token("j1") for _ in range(100)))
    assert len(rig.emu.admin.requests(grant_type=JWT_GRANT)) == minted + 1
    assert {t.version for t in tokens} == {2}
    assert await _works(tokens[0].instance_url, tokens[0].access_token.reveal())
    assert rig.refresh_grants() == 0


async def test_client_credentials_connection_is_minted_again_on_the_my_domain(rig: Rig) -> None:
    app, org = rig.emu.app_config, rig.emu.orgs[1]
    await rig.store.integrations.put(
        "cc",
        provider="salesforce",
        client_id=app.client_id,
        client_secret=app.client_secret,
        login_url=org.my_domain_url,
        auth_mode="client_credentials",
    )
    result = await _flow(rig).connect_direct("cc", connection_id="k1")
    assert result.org_id == org.org_id
    before = len(rig.emu.admin.requests(grant_type="client_credentials"))
    token = await rig.coordinator.refresh("k1")
    assert token.version == 2
    assert len(rig.emu.admin.requests(grant_type="client_credentials")) == before + 1
    assert await _works(token.instance_url, token.access_token.reveal())
