"""Direct mode through the SDK's auth plug-ins, against a real gateway and the emulator.

The app calls Salesforce itself (``instance_url`` from ``GET /connections/{id}/token``);
``TokenkeepAuth`` (httpx, sync and async) and ``TokenkeepRequestsAuth`` (requests) set the
token. When the emulator's clock moves past the session timeout, the next call gets a 401
INVALID_SESSION_ID, asks the gateway to refresh, and is replayed once: the caller sees a
200, and the emulator's log shows exactly one refresh grant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import requests

from tokenkeep.client import Client, TokenkeepAuth, TokenkeepRequestsAuth
from tokenkeep.testing import GatewayUnderTest

LIMITS = "/services/data/v60.0/limits"


async def _connected(gw: GatewayUnderTest, connection_id: str = "acme") -> str:
    """Connect org 0's first user; return its instance URL."""
    connection = await gw.connect(connection_id)
    return connection.instance_url


async def test_httpx_sync_auth_refreshes_once_after_expiry(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    instance_url = await _connected(gw)

    def call(tk: Client, sf: httpx.Client) -> httpx.Response:
        return sf.get(LIMITS)

    with (
        gw.client() as tk,
        httpx.Client(base_url=instance_url, auth=TokenkeepAuth(tk, "acme")) as sf,
    ):
        first = await asyncio.to_thread(call, tk, sf)
        assert first.status_code == 200, first.text
        assert first.json()["DailyApiRequests"]["Max"] > 0
        before = gw.grants("refresh_token")

        gw.expire_sessions()
        after_expiry = await asyncio.to_thread(call, tk, sf)
        assert after_expiry.status_code == 200, after_expiry.text
        assert gw.grants("refresh_token") == before + 1
        # The renewed token is remembered: the next call needs no refresh at all.
        again = await asyncio.to_thread(call, tk, sf)
        assert again.status_code == 200
        assert gw.grants("refresh_token") == before + 1


async def test_httpx_async_auth_refreshes_once_for_concurrent_calls(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    instance_url = await _connected(gw)
    async with (
        gw.async_client() as tk,
        httpx.AsyncClient(base_url=instance_url, auth=TokenkeepAuth(tk, "acme")) as sf,
    ):
        assert (await sf.get(LIMITS)).status_code == 200
        before = gw.grants("refresh_token")

        gw.expire_sessions()
        answers = await asyncio.gather(*(sf.get(LIMITS) for _ in range(10)))
        assert [a.status_code for a in answers] == [200] * 10
        assert gw.grants("refresh_token") == before + 1


async def test_requests_auth_refreshes_once_and_replays_a_write(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    instance_url = await _connected(gw)
    tk = gw.client()
    session = requests.Session()
    session.trust_env = False
    session.auth = TokenkeepRequestsAuth(tk, "acme")
    accounts = f"{instance_url}/services/data/v60.0/sobjects/Account"

    def create(name: str) -> requests.Response:
        return session.post(accounts, json={"Name": name}, timeout=30)

    try:
        first = await asyncio.to_thread(create, "Before expiry")
        assert first.status_code == 201, first.text
        before = gw.grants("refresh_token")

        gw.expire_sessions()
        second = await asyncio.to_thread(create, "After expiry")
        assert second.status_code == 201, second.text
        assert gw.grants("refresh_token") == before + 1
        # The 401 is kept in the history; the body was sent again, once.
        assert [r.status_code for r in second.history] == [401]
        created = await asyncio.to_thread(
            session.get, f"{accounts}/{second.json()['id']}", timeout=30
        )
        assert created.json()["Name"] == "After expiry"
    finally:
        session.close()
        tk.close()


async def test_a_revoked_grant_raises_needs_reauth(tokenkeep_gateway: GatewayUnderTest) -> None:
    """The password changes: the refresh fails for good, the caller gets NeedsReauthError
    (from the call that found out, and at once from the next one)."""
    from tokenkeep.errors import NeedsReauthError

    gw = tokenkeep_gateway
    instance_url = await _connected(gw)
    user = gw.emulator.orgs[0].users[0]
    async with (
        gw.async_client() as tk,
        httpx.AsyncClient(base_url=instance_url, auth=TokenkeepAuth(tk, "acme")) as sf,
    ):
        assert (await sf.get(LIMITS)).status_code == 200
        gw.emulator.admin.set_password(user.username, "a-new-password-1")
        with pytest.raises(NeedsReauthError):
            await sf.get(LIMITS)
        calls = len(gw.emulator.admin.requests())
        with pytest.raises(NeedsReauthError):
            await sf.get(LIMITS)
        assert len(gw.emulator.admin.requests()) == calls  # refused before reaching Salesforce


async def test_a_streamed_body_is_not_replayed_but_the_next_call_works(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    """A streamed upload cannot be sent twice: the 401 comes back, the token is renewed
    (one refresh grant), and the caller's own retry succeeds without another refresh."""
    gw = tokenkeep_gateway
    instance_url = await _connected(gw)
    accounts = "/services/data/v60.0/sobjects/Account"

    async def body(name: str) -> AsyncIterator[bytes]:
        yield b'{"Name": "'
        yield name.encode()
        yield b'"}'

    async with (
        gw.async_client() as tk,
        httpx.AsyncClient(base_url=instance_url, auth=TokenkeepAuth(tk, "acme")) as sf,
    ):
        headers = {"Content-Type": "application/json"}
        first = await sf.post(accounts, content=body("streamed 1"), headers=headers)
        assert first.status_code == 201, first.text
        before = gw.grants("refresh_token")

        gw.expire_sessions()
        refused = await sf.post(accounts, content=body("streamed 2"), headers=headers)
        assert refused.status_code == 401
        assert refused.json()[0]["errorCode"] == "INVALID_SESSION_ID"
        assert gw.grants("refresh_token") == before + 1

        retried = await sf.post(accounts, content=body("streamed 2"), headers=headers)
        assert retried.status_code == 201, retried.text
        assert gw.grants("refresh_token") == before + 1


def test_an_async_sdk_client_cannot_drive_a_sync_httpx_client() -> None:
    from tokenkeep.client import AsyncClient

    auth = TokenkeepAuth(AsyncClient("http://127.0.0.1:9", "tk_x"), "acme")
    with httpx.Client(auth=auth) as sf, pytest.raises(TypeError, match="AsyncClient"):
        sf.get("http://127.0.0.1:9/services/data")
