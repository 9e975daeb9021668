"""``GET /connections/{id}/token`` and ``POST /connections/{id}/refresh`` (direct mode)."""

from __future__ import annotations

import httpx
import pytest

from tokenkeep.testing import GatewayUnderTest

pytestmark = pytest.mark.tokenkeep_gateway(orgs=1, seed=3)


def _auth(gw: GatewayUnderTest) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.api_key.reveal()}"}


async def _limits(token: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(
            f"{token['instance_url']}/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )


async def test_a_fresh_import_is_served_without_a_refresh(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("t1")
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw)) as http:
        answer = await http.get("/connections/t1/token")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    token = answer.json()
    assert token["connection_id"] == "t1"
    assert token["org_id"] == gw.emulator.orgs[0].org_id
    assert token["expires_at"] is not None  # learned from issued_at + the session timeout
    assert (await _limits(token)).status_code == 200
    assert gw.grants() == 0  # issued_at said the token was new: no refresh was needed


async def test_forced_refresh_rotates_the_token_once(tokenkeep_gateway: GatewayUnderTest) -> None:
    gw = tokenkeep_gateway
    await gw.connect("t2")
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw)) as http:
        before = (await http.get("/connections/t2/token")).json()
        refreshed = await http.post("/connections/t2/refresh")
        assert refreshed.status_code == 200
        after = refreshed.json()
        # A client that reports the OLD version as rejected gets the new token, no refresh.
        again = await http.post(
            "/connections/t2/refresh", json={"rejected_version": before["version"]}
        )
    assert after["version"] > before["version"]
    assert after["access_token"] != before["access_token"]
    assert again.json()["version"] == after["version"]
    assert gw.grants() == 1
    assert (await _limits(after)).status_code == 200


async def test_a_rejected_current_token_is_refreshed_exactly_once(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("t3")
    gw.expire_sessions()  # Salesforce killed the session; the gateway does not know yet
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw)) as http:
        stale = (await http.get("/connections/t3/token")).json()
        assert (await _limits(stale)).status_code == 401
        renewed = await http.post(
            "/connections/t3/refresh", json={"rejected_version": stale["version"]}
        )
    assert renewed.status_code == 200
    assert (await _limits(renewed.json())).status_code == 200
    assert gw.grants() == 1


async def test_a_revoked_connection_answers_409_without_calling_salesforce(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("t4")
    user = gw.emulator.orgs[0].users[0]
    gw.emulator.admin.set_password(user.username, "a-new-password-1")
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw)) as http:
        first = await http.post("/connections/t4/refresh")
        second = await http.get("/connections/t4/token")
        shown = (await http.get("/connections/t4")).json()
    assert first.status_code == 409
    assert first.json()["error"]["code"] == "needs_reauth"
    assert second.status_code == 409
    assert shown["status"] == "needs_reauth"
    assert gw.grants() == 1  # the one refused attempt; the 409s never reach Salesforce


async def test_token_routes_need_an_api_key_and_a_known_connection(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        no_key = await http.get("/connections/nope/token")
        unknown = await http.get("/connections/nope/token", headers=_auth(gw))
        bad_body = await http.post(
            "/connections/nope/refresh", headers=_auth(gw), json={"rejected_version": "x"}
        )
    assert no_key.status_code == 401
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert bad_body.status_code == 422


async def test_delete_with_revoke_revokes_the_grant_upstream(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("t5")
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw)) as http:
        token = (await http.get("/connections/t5/token")).json()
        deleted = await http.delete("/connections/t5", params={"revoke": "true"})
        gone = await http.get("/connections/t5")
    assert deleted.status_code == 204
    assert gone.status_code == 404
    # Revoking the refresh token revoked its access token too.
    assert (await _limits(token)).status_code == 401
    assert len(gw.emulator.admin.requests(path="/services/oauth2/revoke")) == 1


async def test_delete_with_revoke_keeps_the_connection_when_salesforce_is_unreachable(
    tokenkeep_gateway: GatewayUnderTest, unused_tcp_port: int
) -> None:
    gw = tokenkeep_gateway
    down = f"http://127.0.0.1:{unused_tcp_port}"  # nothing listens there
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw)) as http:
        put = await http.put(
            "/integrations/down",
            json={
                "provider": "salesforce",
                "client_id": "3MVG9down",
                "client_secret": "s3cret",
                "login_url": down,
            },
        )
        assert put.status_code in (200, 201), put.text
        imported = await http.post(
            "/connections",
            json={
                "connection_id": "t6",
                "integration": "down",
                "credentials": {
                    "access_token": "00D000000000001!tok",
                    "refresh_token": "5Aep8rt",
                    "instance_url": down,
                },
            },
        )
        assert imported.status_code == 201, imported.text
        refused = await http.delete("/connections/t6", params={"revoke": "true"})
        still = await http.get("/connections/t6")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "upstream_unavailable"
    assert still.status_code == 200


async def _token_from(gw: GatewayUnderTest, connection_id: str, address: str) -> None:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(
        base_url=gw.base_url, headers=_auth(gw), transport=transport
    ) as http:
        answer = await http.get(f"/connections/{connection_id}/token")
    assert answer.status_code == 200, answer.text


async def test_the_token_route_records_the_address_it_was_handed_to(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    """``last_used_from_address`` follows the direct-mode caller (the evidence diagnosis
    compares with ``issued_to_address`` for IP-locked sessions)."""
    gw = tokenkeep_gateway
    await gw.connect("t9")
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw)) as http:
        assert (await http.get("/connections/t9")).json()["last_used_from_address"] is None
        await _token_from(gw, "t9", "127.0.0.2")
        first = (await http.get("/connections/t9")).json()
        assert first["last_used_from_address"] == "127.0.0.2"
        await _token_from(gw, "t9", "127.0.0.2")
        await _token_from(gw, "t9", "127.0.0.3")
        second = (await http.get("/connections/t9")).json()
    assert second["last_used_from_address"] == "127.0.0.3"
    assert second["updated_at"] == first["updated_at"]  # bookkeeping only
