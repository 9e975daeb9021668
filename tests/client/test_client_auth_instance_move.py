"""Direct mode after an instance move: the replay and later calls follow the new host.

The emulator moves org 0 to a new port (``PATCH /_emulator/orgs/{id}`` with
``{"instance_url": "new"}``); its old host keeps answering but no longer knows the org
(401 INVALID_SESSION_ID). The auth plug-ins renew the token through the gateway, whose
refresh answer carries the new ``instance_url``: the one replay, and every later call
aimed at the old host, must go to the new one (Salesforce's Mobile SDK does the same;
shared/SALESFORCE.md). A request to any other host is never rewritten.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import requests

from tokenkeep.client import TokenkeepAuth, TokenkeepRequestsAuth, simple_salesforce
from tokenkeep.testing import GatewayUnderTest

pytestmark = pytest.mark.tokenkeep_gateway(orgs=1, seed=11)

LIMITS = "/services/data/v60.0/limits"


def _move(gw: GatewayUnderTest) -> str:
    org = gw.emulator.orgs[0]
    moved: dict[str, Any] = gw.emulator.admin.patch_org(org.org_id, {"instance_url": "new"})
    return str(moved["instance_url"]).rstrip("/")


def _data_hosts(gw: GatewayUnderTest) -> list[str]:
    return [c["host"].rstrip("/") for c in gw.emulator.admin.requests(path="/services/data")]


async def test_httpx_sync_auth_follows_an_instance_move(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    old = (await gw.connect("acme")).instance_url.rstrip("/")
    with gw.client() as tk, httpx.Client(base_url=old, auth=TokenkeepAuth(tk, "acme")) as sf:
        assert (await asyncio.to_thread(sf.get, LIMITS)).status_code == 200
        new = _move(gw)
        assert new != old
        moved = await asyncio.to_thread(sf.get, LIMITS)
        assert moved.status_code == 200, moved.text
        assert str(moved.request.url).startswith(new + "/")
        later = await asyncio.to_thread(sf.get, LIMITS)
        assert later.status_code == 200, later.text
    # The call that met the move on the old host, then only the new host.
    assert _data_hosts(gw) == [old, old, new, new]
    assert gw.grants("refresh_token") == 1


async def test_httpx_async_auth_follows_an_instance_move(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    old = (await gw.connect("acme")).instance_url.rstrip("/")
    async with (
        gw.async_client() as tk,
        httpx.AsyncClient(base_url=old, auth=TokenkeepAuth(tk, "acme")) as sf,
    ):
        assert (await sf.get(LIMITS)).status_code == 200
        new = _move(gw)
        answers = await asyncio.gather(*(sf.get(LIMITS) for _ in range(3)))
        assert [a.status_code for a in answers] == [200] * 3
        assert (await sf.get(LIMITS)).status_code == 200
    assert _data_hosts(gw)[-1] == new
    assert gw.grants("refresh_token") == 1


async def test_requests_auth_follows_an_instance_move(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    old = (await gw.connect("acme")).instance_url.rstrip("/")
    tk = gw.client()
    session = requests.Session()
    session.trust_env = False
    session.auth = TokenkeepRequestsAuth(tk, "acme")

    def get(url: str) -> requests.Response:
        return session.get(url, timeout=30)

    try:
        assert (await asyncio.to_thread(get, old + LIMITS)).status_code == 200
        new = _move(gw)
        moved = await asyncio.to_thread(get, old + LIMITS)
        assert moved.status_code == 200, moved.text
        assert [r.status_code for r in moved.history] == [401]
        assert moved.url.startswith(new + "/")
        later = await asyncio.to_thread(get, old + LIMITS)
        assert later.status_code == 200, later.text
        assert later.history == []
    finally:
        session.close()
        tk.close()
    assert _data_hosts(gw) == [old, old, new, new]
    assert gw.grants("refresh_token") == 1


async def test_simple_salesforce_direct_mode_follows_an_instance_move(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    old = (await gw.connect("acme")).instance_url.rstrip("/")
    tk = gw.client()
    sf = await asyncio.to_thread(simple_salesforce, tk, "acme", mode="direct", version="60.0")
    try:
        query = "SELECT Id FROM Account"
        assert (await asyncio.to_thread(sf.query, query))["done"] is True
        new = _move(gw)
        # The call that meets the move is renewed and replayed on the new host.
        assert (await asyncio.to_thread(sf.query, query))["done"] is True
        new_host = new.split("://", 1)[1]
        assert sf.sf_instance == new_host
        assert sf.base_url == f"https://{new_host}/services/data/v60.0/"
        created = await asyncio.to_thread(sf.Account.create, {"Name": "after the move"})
        assert created["success"] is True
    finally:
        sf.session.close()
        tk.close()
    hosts = _data_hosts(gw)
    assert hosts[:2] == [old, old]
    assert set(hosts[2:]) == {new}
    assert gw.grants("refresh_token") == 1


async def test_a_request_to_another_host_is_never_rewritten(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    """Only URLs on a former instance of the connection follow a move: after the move was
    followed, a call to the login host still goes to the login host."""
    gw = tokenkeep_gateway
    old = (await gw.connect("acme")).instance_url.rstrip("/")
    login = gw.emulator.login_url.rstrip("/")
    with gw.client() as tk, httpx.Client(auth=TokenkeepAuth(tk, "acme")) as sf:
        assert (await asyncio.to_thread(sf.get, old + LIMITS)).status_code == 200
        new = _move(gw)
        moved = await asyncio.to_thread(sf.get, old + LIMITS)
        assert str(moved.request.url).startswith(new + "/")
        answer = await asyncio.to_thread(sf.get, login + "/services/oauth2/userinfo")
        assert str(answer.request.url).startswith(login + "/")
        assert answer.status_code == 200, answer.text
