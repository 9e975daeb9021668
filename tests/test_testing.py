"""The ``tokenkeep_gateway`` fixture users get (src/tokenkeep/testing.py)."""

from __future__ import annotations

import httpx
import pytest

from tokenkeep.testing import GatewayUnderTest


@pytest.mark.tokenkeep_gateway(orgs=2)
async def test_connect_through_the_hosted_flow(tokenkeep_gateway: GatewayUnderTest) -> None:
    """``connect()`` runs the real connect flow: the connection is active, bound to the
    right org and user, and its first token needs no refresh (introspected at connect)."""
    gw = tokenkeep_gateway
    org = gw.emulator.orgs[1]
    user = org.users[0]
    connection = await gw.connect("globex", org=1, metadata={"tenant": "globex"})
    assert connection.status == "active"
    assert (connection.org_id or "")[:15] == org.org_id[:15]
    assert connection.username == user.username
    assert connection.instance_url == org.instance_url
    assert connection.metadata == {"tenant": "globex"}
    assert gw.grants("authorization_code") == 1
    async with gw.async_client() as tk:
        token = await tk.get_token("globex")
    assert token.instance_url == org.instance_url
    assert gw.grants("refresh_token") == 0


async def test_connect_by_import(tokenkeep_gateway: GatewayUnderTest) -> None:
    gw = tokenkeep_gateway
    connection = await gw.connect("acme", via="import")
    assert connection.status == "active"
    assert connection.has_refresh_token is True
    assert (connection.org_id or "")[:15] == gw.emulator.orgs[0].org_id[:15]


async def test_the_gateway_answers_on_its_base_url(tokenkeep_gateway: GatewayUnderTest) -> None:
    gw = tokenkeep_gateway
    async with httpx.AsyncClient() as http:
        ready = await http.get(f"{gw.base_url}/readyz")
        denied = await http.get(f"{gw.base_url}/integrations")
    assert ready.status_code == 200
    assert denied.status_code == 401
    assert "tk_" not in repr(gw.api_key)
    assert gw.proxy_url("acme") == f"{gw.base_url}/c/acme"
