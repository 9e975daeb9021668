"""The dashboard's pages against a real gateway and the emulator: what an admin sees."""

from __future__ import annotations

import asyncio
import re

import httpx
from tests.dashboard.dash_helpers import csrf_of, logged_in

from tokenkeep.harness import GatewayUnderTest

QUERY = "/services/data/v60.0/query?q=SELECT+Id+FROM+Account"


async def _proxied(gw: GatewayUnderTest, connection_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30) as http:
        return await http.get(f"/c/{connection_id}{QUERY}")


def _flash(html: str) -> str:
    match = re.search(r'class="flash" role="status">([^<]*)<', html)
    return match.group(1) if match else ""


async def test_the_overview_counts_connections_and_charts_the_calls(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    await gw.connect("c2", org=1)
    assert (await _proxied(gw, "c1")).status_code == 200
    gw.emulator.admin.set_password(gw.emulator.orgs[1].users[0].username, "N3w-passw0rd!")
    gw.emulator.admin.advance_clock(3 * 3600)  # both sessions dead
    assert (await _proxied(gw, "c2")).status_code == 409  # revoked: needs a reconnect
    await gw.gateway.org_health.flush()
    async with logged_in(gw) as client:
        page = await client.get("/dashboard")
    assert page.status_code == 200
    html = page.text
    assert "Connections per integration" in html
    assert re.search(r'<th scope="row"><a [^>]*>emulator</a></th>', html)
    assert "Needs reconnect" in html
    assert "<svg" in html
    assert "Proxied calls per hour" in html
    assert "revoked" in html  # the cause's legend and hour table
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


async def test_connections_are_searched_filtered_and_link_to_their_page(
    gw: GatewayUnderTest,
) -> None:
    await gw.connect("acme-1")
    await gw.connect("globex-1", org=1)
    org0 = gw.emulator.orgs[0].org_id
    async with logged_in(gw) as client:
        everything = (await client.get("/dashboard/connections")).text
        assert "acme-1" in everything
        assert "globex-1" in everything
        found = (await client.get("/dashboard/connections", params={"q": "ACME"})).text
        assert "acme-1" in found
        assert "globex-1" not in found
        by_org = (await client.get("/dashboard/connections", params={"org": org0})).text
        assert "acme-1" in by_org
        assert "globex-1" not in by_org
        none = (await client.get("/dashboard/connections", params={"status": "error"})).text
        assert "No connection matches" in none
        wild = (await client.get("/dashboard/connections", params={"q": "%"})).text
        assert "No connection matches" in wild  # LIKE wildcards are literal
        page = await client.get("/dashboard/connections/acme-1")
        assert page.status_code == 200
        assert "Refresh now" in page.text
        missing = await client.get("/dashboard/connections/nope")
        assert missing.status_code == 404
        assert "No such connection" in missing.text


async def test_the_connection_page_explains_a_diagnosis_in_words(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    org = gw.emulator.orgs[0]
    gw.emulator.admin.patch_org(org.org_id, {"api_client_control": True})
    async with logged_in(gw) as client:
        page = await client.get("/dashboard/connections/c1")
        done = await client.post(
            "/dashboard/connections/c1/diagnose", data={"csrf_token": csrf_of(page.text)}
        )
        assert done.status_code == 303
        html = (await client.get("/dashboard/connections/c1")).text
    assert "API Access Control" in html
    assert "What tokenkeep saw" in html
    assert "install the app org-wide" in html  # FIXES[api_client_control]
    assert "Admin action" in html  # the new status, in words
    assert "Diagnosis done" in _flash(html)
    assert "Diagnosis: api_client_control" in html  # the timeline row


async def test_refresh_now_adds_to_the_timeline(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    async with logged_in(gw) as client:
        page = await client.get("/dashboard/connections/c1")
        assert "Refreshed (" not in page.text
        answer = await client.post(
            "/dashboard/connections/c1/refresh", data={"csrf_token": csrf_of(page.text)}
        )
        assert answer.status_code == 303
        html = (await client.get("/dashboard/connections/c1")).text
    assert "Refreshed: the token is now version 2" in _flash(html)
    assert "Refreshed (refresh_token" in html
    assert gw.grants() == 1


async def test_a_failed_refresh_says_why(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    gw.emulator.admin.set_password(gw.emulator.orgs[0].users[0].username, "N3w-passw0rd!")
    async with logged_in(gw) as client:
        page = await client.get("/dashboard/connections/c1")
        await client.post(
            "/dashboard/connections/c1/refresh", data={"csrf_token": csrf_of(page.text)}
        )
        html = (await client.get("/dashboard/connections/c1")).text
    assert "Refresh failed" in _flash(html)
    assert "Needs reconnect" in html
    assert "send the user a connect link" in html  # the fix, from the status reason


async def test_a_reconnect_link_is_a_new_connect_session(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    async with logged_in(gw) as client:
        token = csrf_of((await client.get("/dashboard/connections/c1")).text)
        fragment = await client.post(
            "/dashboard/connections/c1/reconnect-link",
            headers={"HX-Request": "true", "X-CSRF-Token": token},
        )
        assert fragment.status_code == 200
        assert "<html" not in fragment.text
        link = re.search(r'value="(http[^"]+/connect/[^"]+)"', fragment.text)
        assert link is not None
        full = await client.post(
            "/dashboard/connections/c1/reconnect-link", data={"csrf_token": token}
        )
        assert "<html" in full.text
        assert "/connect/" in full.text
    async with httpx.AsyncClient() as stranger:  # the link opens the consent flow
        opened = await stranger.get(link.group(1))
        assert opened.status_code == 302


async def test_delete_needs_the_id_typed(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    async with logged_in(gw) as client:
        token = csrf_of((await client.get("/dashboard/connections/c1")).text)
        kept = await client.post(
            "/dashboard/connections/c1/delete", data={"csrf_token": token, "confirm": "c2"}
        )
        assert kept.headers["location"] == "/dashboard/connections/c1"
        assert (await gw.gateway.store.connections.get("c1")).id == "c1"
        gone = await client.post(
            "/dashboard/connections/c1/delete", data={"csrf_token": token, "confirm": "c1"}
        )
        assert gone.headers["location"] == "/dashboard/connections"
        listing = (await client.get("/dashboard/connections")).text
    assert "Connection c1 deleted." in _flash(listing)
    assert "No connection matches" in listing


async def test_orgs_show_health_usage_and_causes(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    org = gw.emulator.orgs[0].org_id
    assert (await _proxied(gw, "c1")).status_code == 200
    await gw.gateway.org_health.flush()
    async with logged_in(gw) as client:
        listing = (await client.get("/dashboard/orgs")).text
        assert org in listing
        assert "Healthy" in listing
        page = await client.get(f"/dashboard/orgs/{org}")
        assert page.status_code == 200
        assert "API usage" in page.text
        assert "<meter" in page.text  # Sforce-Limit-Info from the emulator's answer
        assert "c1" in page.text
        assert (await client.get("/dashboard/orgs/00Dnope")).status_code == 404


async def test_logs_filter_and_poll(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    await gw.connect("c2", org=1)
    assert (await _proxied(gw, "c1")).status_code == 200
    async with logged_in(gw) as client:
        # A proxied call's row is queued just after its answer is sent: wait for it (bounded).
        for _ in range(100):
            page = await client.get("/dashboard/logs")
            if "GET /services/data/v60.0/query" in page.text:
                break
            await asyncio.sleep(0.05)
        assert 'hx-trigger="every 5s"' in page.text
        assert "GET /services/data/v60.0/query" in page.text
        calls = (await client.get("/dashboard/logs", params={"kind": "call"})).text
        assert "connect" not in re.findall(r'class="kind kind-(\w+)"', calls)
        rows = await client.get("/dashboard/logs/rows", params={"connection": "c2"})
        assert "<html" not in rows.text
        assert "c2" in rows.text
        assert "/c1" not in rows.text
        bad = await client.get("/dashboard/logs", params={"status": "9xx"})
        assert bad.status_code == 400


async def test_webhooks_list_endpoints_and_redeliver(gw: GatewayUnderTest) -> None:
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers) as api:
        made = await api.post("/webhooks", json={"url": "http://127.0.0.1:9/hook?token=abc"})
        assert made.status_code == 201
    await gw.connect("c1")  # connection.created
    async with logged_in(gw) as client:
        page = await client.get("/dashboard/webhooks")
        assert "http://127.0.0.1:9/hook?…" in page.text  # never the query string
        assert "connection.created" in page.text
        event_id = re.search(r"<code>(evt_[0-9a-f]+)</code>", page.text)
        assert event_id is not None
        answer = await client.post(
            f"/dashboard/events/{event_id.group(1)}/redeliver",
            data={"csrf_token": csrf_of(page.text)},
        )
        assert answer.status_code == 303
        after = (await client.get("/dashboard/webhooks")).text
    assert "queued again for 1 endpoint" in _flash(after)


async def test_delete_with_revoke_ends_the_grant_at_salesforce(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    stored = await gw.gateway.store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    assert stored.credentials.refresh_token is not None
    refresh_token = stored.credentials.refresh_token.reveal()
    async with logged_in(gw) as client:
        page = (await client.get("/dashboard/connections/c1")).text
        assert 'name="revoke"' in page
        gone = await client.post(
            "/dashboard/connections/c1/delete",
            data={"csrf_token": csrf_of(page), "confirm": "c1", "revoke": "true"},
        )
        assert gone.headers["location"] == "/dashboard/connections"
        listing = (await client.get("/dashboard/connections")).text
    assert "Connection c1 deleted, its grant revoked at Salesforce." in _flash(listing)
    app = gw.emulator.apps[0]
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            gw.emulator.login_url + "/services/oauth2/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
            },
        )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"
    revokes = [e for e in gw.emulator.admin.requests() if e["path"] == "/services/oauth2/revoke"]
    assert [e["status"] for e in revokes] == [200]
