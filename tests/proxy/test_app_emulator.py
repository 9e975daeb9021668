"""The proxy against the Salesforce emulator (src/tokenkeep/proxy/app.py): retry once,
single refresh under concurrency, causes, maintenance pause and resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from tests.proxy.proxy_support import API_KEY, EmulatorTokens, running_proxy

from tokenkeep.clock import ManualClock
from tokenkeep.emulator import Emulator

# The proxy's behaviour holds for each upstream client (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("upstream_client")

AUTH = {"Authorization": f"Bearer {API_KEY}"}
QUERY = "/services/data/v60.0/query?q=SELECT+Id,Name+FROM+Account"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator.running(orgs=2) as emulator:
        yield emulator


@pytest.fixture
async def tokens(emu: Emulator) -> AsyncIterator[EmulatorTokens]:
    source = EmulatorTokens(emu)
    await source.connect("acme")
    try:
        yield source
    finally:
        await source.close()


def _data_calls(emu: Emulator) -> list[dict[str, Any]]:
    return emu.admin.requests(path="/services/data")


def _refresh_grants(emu: Emulator) -> int:
    return len(emu.admin.requests(grant_type="refresh_token"))


async def test_a_proxied_query_works_in_both_addressing_modes(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    async with running_proxy(tokens) as (url, app), aiohttp.ClientSession() as http:
        async with http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert "records" in body
            assert "api-usage=" in resp.headers["Sforce-Limit-Info"]
        async with http.get(
            url + "/proxy" + QUERY, headers={**AUTH, "Connection-Id": "acme"}
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["totalSize"] == body["totalSize"]
        org_id = tokens.conns["acme"].token.org_id
        assert org_id is not None
        info = app.limit_info(org_id)
        assert info is not None
        assert info.value.startswith("api-usage=")
    assert len(_data_calls(emu)) == 2
    assert _refresh_grants(emu) == 0


async def test_an_expired_session_is_refreshed_once_and_the_call_replayed(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    async with running_proxy(tokens) as (url, _), aiohttp.ClientSession() as http:
        emu.admin.advance_clock(7200 + 60)
        async with http.post(
            url + "/c/acme/services/data/v60.0/sobjects/Account",
            headers=AUTH,
            json={"Name": "Replayed Inc"},
        ) as resp:
            assert resp.status == 201, await resp.text()
            assert resp.headers["Tokenkeep-Cause"] == "expired"  # named, and recovered
            created = await resp.json()
    assert _refresh_grants(emu) == 1
    calls = _data_calls(emu)
    assert [c["status"] for c in calls] == [401, 201]
    assert calls[0]["errorCode"] == "INVALID_SESSION_ID"
    assert tokens.refresh_calls == [("acme", 1)]
    # The replay carried the same body: the record exists once, with the name sent.
    async with running_proxy(tokens) as (url, _), aiohttp.ClientSession() as http:
        path = f"/c/acme/services/data/v60.0/sobjects/Account/{created['id']}"
        async with http.get(url + path, headers=AUTH) as resp:
            assert (await resp.json())["Name"] == "Replayed Inc"


async def test_retry_never_becomes_twice(emu: Emulator, tokens: EmulatorTokens) -> None:
    org_id = tokens.conns["acme"].token.org_id
    assert org_id is not None
    # Sessions locked to the IP that created them; the test source gets tokens from
    # 127.0.0.1, the proxy calls from its pinned egress address 127.0.0.2: every call is
    # "Session expired or invalid", and so is the replay with the freshly refreshed token.
    emu.admin.patch_org(org_id, {"lock_sessions_to_ip": True})
    async with (
        running_proxy(tokens, egress_address="127.0.0.2") as (url, _),
        aiohttp.ClientSession() as http,
        http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp,
    ):
        assert resp.status == 401
        body = await resp.read()
        assert resp.headers["Tokenkeep-Cause"] == "unknown"
    assert json.loads(body)[0]["errorCode"] == "INVALID_SESSION_ID"
    assert _refresh_grants(emu) == 1
    calls = _data_calls(emu)
    assert [c["status"] for c in calls] == [401, 401]
    assert {c["client"] for c in calls} == {"127.0.0.2"}
    ((conn, cause, evidence),) = tokens.causes
    assert (conn, cause) == ("acme", "unknown")
    seen = {fact["name"]: fact["value"] for fact in evidence["evidence"]}
    assert (seen["answer"], seen["refresh"]) == (401, "ok")  # refreshed, refused again


async def test_a_session_not_valid_for_rest_is_not_refreshed(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    org_id = tokens.conns["acme"].token.org_id
    assert org_id is not None
    # API Client Control: OAuth works, REST answers the "not valid for use with the REST
    # API" variant, which a refresh cannot fix.
    emu.admin.patch_org(org_id, {"api_client_control": True})
    async with (
        running_proxy(tokens) as (url, _),
        aiohttp.ClientSession() as http,
        http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp,
    ):
        assert resp.status == 401
        assert "REST API" in (await resp.json())[0]["message"]
        # Named from the answer alone (medium confidence: this test source runs no probe).
        assert resp.headers["Tokenkeep-Cause"] == "api_client_control"
    assert _refresh_grants(emu) == 0
    assert len(_data_calls(emu)) == 1


async def test_100_concurrent_calls_on_an_expired_token_make_one_refresh(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    emu.admin.advance_clock(7200 + 60)
    async with running_proxy(tokens) as (url, _), aiohttp.ClientSession() as http:

        async def one() -> int:
            async with http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(one() for _ in range(100)))
    assert statuses == [200] * 100
    assert _refresh_grants(emu) == 1
    # Every caller that met the 401 named the version it used: the source refreshed once.
    assert {v for _, v in tokens.refresh_calls} == {1}
    assert tokens.refreshes == 1


async def test_a_revoked_connection_returns_salesforce_401_with_cause_revoked(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    user = emu.orgs[0].users[0]
    emu.admin.set_password(user.username, "N3w-password!")
    async with running_proxy(tokens) as (url, _), aiohttp.ClientSession() as http:
        async with http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp:
            assert resp.status == 401
            assert resp.headers["Tokenkeep-Cause"] == "revoked"
            assert (await resp.json())[0]["errorCode"] == "INVALID_SESSION_ID"
        before = len(emu.admin.requests())
        # Known as needs_reauth now: 409 at once, nothing reaches Salesforce.
        async with http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp:
            assert resp.status == 409
            assert (await resp.json())["error"]["code"] == "needs_reauth"
        assert len(emu.admin.requests()) == before
    assert _refresh_grants(emu) == 1


async def test_maintenance_pauses_writes_and_a_probe_resumes_them(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    org_id = tokens.conns["acme"].token.org_id
    assert org_id is not None
    await tokens.connect("acme-2", user_index=1)  # another connection of the same org
    clock = ManualClock()
    events: list[tuple[str, str, dict[str, Any]]] = []
    emu.admin.patch_org(org_id, {"read_only": True})
    account = "/services/data/v60.0/sobjects/Account"
    async with (
        running_proxy(tokens, clock=clock, events=events) as (url, _),
        aiohttp.ClientSession() as http,
    ):
        async with http.post(url + "/c/acme" + account, headers=AUTH, json={"Name": "A"}) as resp:
            assert resp.headers["Tokenkeep-Cause"] == "maintenance"
            errors = await resp.json()
            assert errors[0]["errorCode"] == "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
        assert [e[0] for e in events] == ["org.maintenance_started"]
        assert events[0][1] == org_id
        seen = len(_data_calls(emu))
        for conn in ("acme", "acme-2"):
            async with http.post(
                url + f"/c/{conn}" + account, headers=AUTH, json={"Name": "B"}
            ) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "30"
                assert resp.headers["Tokenkeep-Cause"] == "maintenance"  # ours names it too
                assert (await resp.json())["error"]["code"] == "org_write_paused"
        assert len(_data_calls(emu)) == seen  # paused writes never reached Salesforce
        async with http.get(url + "/c/acme-2" + QUERY, headers=AUTH) as resp:
            assert resp.status == 200  # reads pass
        # Still in maintenance at the first probe: paused for another interval.
        clock.advance(30)
        async with http.post(url + "/c/acme" + account, headers=AUTH, json={"Name": "C"}) as resp:
            assert resp.headers["Tokenkeep-Cause"] == "maintenance"
        async with http.post(url + "/c/acme" + account, headers=AUTH, json={"Name": "D"}) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "org_write_paused"
        # Maintenance over: the next probe succeeds and writes flow again.
        emu.admin.patch_org(org_id, {"read_only": False})
        clock.advance(30)
        async with http.post(url + "/c/acme-2" + account, headers=AUTH, json={"Name": "E"}) as resp:
            assert resp.status == 201
        async with http.post(url + "/c/acme" + account, headers=AUTH, json={"Name": "F"}) as resp:
            assert resp.status == 201
    assert [e[0] for e in events] == ["org.maintenance_started", "org.maintenance_ended"]
    writes = [c for c in _data_calls(emu) if c["method"] == "POST"]
    assert len(writes) == 4  # A, the probe C, the probe E, then F: B and D never left


async def test_an_instance_move_mid_traffic_follows_the_refreshed_instance_url(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    org_id = tokens.conns["acme"].token.org_id
    assert org_id is not None
    old_instance = tokens.conns["acme"].token.instance_url
    async with running_proxy(tokens) as (url, _), aiohttp.ClientSession() as http:
        async with http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp:
            assert resp.status == 200
        new_instance = emu.admin.patch_org(org_id, {"instance_url": "new"})["instance_url"]
        assert new_instance != old_instance
        for _ in range(3):
            async with http.get(url + "/c/acme" + QUERY, headers=AUTH) as resp:
                assert resp.status == 200
    hosts = [c["host"].rstrip("/") for c in _data_calls(emu)]
    # One call on the old host, the one that met the move there, then the new host only.
    assert hosts == [old_instance, old_instance, new_instance, new_instance, new_instance]
    assert _refresh_grants(emu) == 1
    assert tokens.conns["acme"].token.instance_url == new_instance


async def test_a_streamed_body_is_not_replayed_but_the_token_is_refreshed(
    emu: Emulator, tokens: EmulatorTokens
) -> None:
    emu.admin.advance_clock(7200 + 60)
    big = json.dumps({"Name": "Big", "Description": "x" * 4096}).encode()
    account = "/c/acme/services/data/v60.0/sobjects/Account"
    async with (
        running_proxy(tokens, retry_buffer_bytes=1024) as (url, _),
        aiohttp.ClientSession() as http,
    ):
        async with http.post(
            url + account, headers={**AUTH, "Content-Type": "application/json"}, data=big
        ) as resp:
            # Salesforce's own 401 reaches the client: the body was streamed, not replayable.
            assert resp.status == 401
            assert resp.headers["Tokenkeep-Cause"] == "expired"
        async with http.post(
            url + account, headers={**AUTH, "Content-Type": "application/json"}, data=big
        ) as resp:
            assert resp.status == 201  # the client's own retry finds a fresh token
    assert _refresh_grants(emu) == 1
    assert [c["status"] for c in _data_calls(emu)] == [401, 201]


async def test_tls_upstream_is_verified_with_the_extra_ca_bundle() -> None:
    import ssl

    async with Emulator.running(orgs=1, tls=True) as emu:
        assert emu.ca_file is not None
        context = ssl.create_default_context(cafile=str(emu.ca_file))
        source = EmulatorTokens(emu, ssl_context=context)
        try:
            await source.connect("secure")
            assert source.conns["secure"].token.instance_url.startswith("https://")
            async with (
                running_proxy(source, ca_bundle=emu.ca_file) as (url, _),
                aiohttp.ClientSession() as http,
                http.get(url + "/c/secure" + QUERY, headers=AUTH) as resp,
            ):
                assert resp.status == 200
            # Without the emulator's CA the certificate is refused: no token goes out.
            before = len(_data_calls(emu))
            async with (
                running_proxy(source) as (url, _),
                aiohttp.ClientSession() as http,
                http.get(url + "/c/secure" + QUERY, headers=AUTH) as resp,
            ):
                assert resp.status == 502
                assert (await resp.json())["error"]["code"] == "upstream_unreachable"
            assert len(_data_calls(emu)) == before
        finally:
            await source.close()
