"""Logging in to the dashboard: the key check, the cookie's flags, CSRF, logout, expiry."""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
import pytest
from tests.dashboard.dash_helpers import PAGES, browser, csrf_of, log_in, logged_in

from tokenkeep.api.dashboard.session import safe_next
from tokenkeep.harness import GatewayUnderTest


def _cookie(answer: httpx.Response, name: str) -> SimpleCookie:
    for header in answer.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        if name in jar:
            return jar
    raise AssertionError(f"no Set-Cookie for {name}")


async def test_every_page_sends_a_stranger_to_the_login_page(gw: GatewayUnderTest) -> None:
    async with browser(gw) as client:
        for path in PAGES:
            answer = await client.get(f"/dashboard{path}")
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/dashboard/login?next=/dashboard")
        polled = await client.get("/dashboard/logs/rows", headers={"HX-Request": "true"})
        assert polled.headers["HX-Redirect"].startswith("/dashboard/login")
        # The API key header is not a dashboard login.
        keyed = await client.get(
            "/dashboard", headers={"Authorization": f"Bearer {gw.api_key.reveal()}"}
        )
        assert keyed.status_code == 303
        assert (await client.get("/dashboard/login")).status_code == 200
        assert (await client.get("/dashboard/static/dashboard.css")).status_code == 200


async def test_login_sets_a_strict_http_only_session_cookie_and_logout_ends_it(
    gw: GatewayUnderTest,
) -> None:
    async with browser(gw) as client:
        answer = await log_in(client, gw.api_key.reveal())
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard"
        morsel = _cookie(answer, "tk_dashboard")["tk_dashboard"]
        assert morsel["httponly"] is True
        assert morsel["samesite"].lower() == "strict"
        assert morsel["path"] == "/dashboard"
        assert not morsel["secure"]  # plain http here; https requests get Secure
        assert int(morsel["max-age"]) == 12 * 3600
        assert morsel.value != gw.api_key.reveal()
        overview = await client.get("/dashboard")
        assert overview.status_code == 200
        assert "Overview" in overview.text
        stolen = morsel.value
        out = await client.post("/dashboard/logout", data={"csrf_token": csrf_of(overview.text)})
        assert out.status_code == 303
        assert (await client.get("/dashboard")).status_code == 303
    async with browser(gw) as replay:  # the old cookie is worthless: its row is gone
        replay.cookies.set("tk_dashboard", stolen, path="/dashboard")
        assert (await replay.get("/dashboard")).status_code == 303


async def test_the_cookie_is_secure_when_the_request_came_over_https(
    gw: GatewayUnderTest,
) -> None:
    from tokenkeep.server import build_asgi_app

    app = build_asgi_app(gw.gateway)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://gateway.test") as client:
        answer = await log_in(client, gw.api_key.reveal())
        assert answer.status_code == 303
        assert _cookie(answer, "tk_dashboard")["tk_dashboard"]["secure"] is True
    # A forwarded-proto header is not trusted to say https.
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://gateway.test",
        headers={"X-Forwarded-Proto": "https"},
    ) as client:
        answer = await log_in(client, gw.api_key.reveal())
        assert not _cookie(answer, "tk_dashboard")["tk_dashboard"]["secure"]


async def test_a_wrong_key_is_refused_with_the_form_again(gw: GatewayUnderTest) -> None:
    async with browser(gw) as client:
        answer = await log_in(client, "tk_not-a-key")
        assert answer.status_code == 401
        assert "not valid" in answer.text
        assert "tk_dashboard=" not in answer.headers.get("set-cookie", "").replace(
            "tk_dashboard_login=", ""
        )
        assert (await client.get("/dashboard")).status_code == 303


async def test_a_revoked_key_ends_its_sessions(gw: GatewayUnderTest) -> None:
    created = await gw.gateway.store.api_keys.create("dash")
    async with browser(gw) as client:
        assert (await log_in(client, created.secret.reveal())).status_code == 303
        assert (await client.get("/dashboard")).status_code == 200
        await gw.gateway.store.api_keys.revoke(created.key.id)
        assert (await client.get("/dashboard")).status_code == 303


async def test_a_session_expires_after_12_hours(gw: GatewayUnderTest) -> None:
    async with logged_in(gw) as client:
        assert (await client.get("/dashboard")).status_code == 200
        gw.emulator.admin.advance_clock(12 * 3600 + 5)  # one clock for both sides
        assert (await client.get("/dashboard")).status_code == 303


async def test_forms_without_or_with_a_wrong_csrf_token_are_refused(
    gw: GatewayUnderTest,
) -> None:
    await gw.connect("c1")
    async with logged_in(gw) as client:
        page = await client.get("/dashboard/connections/c1")
        token = csrf_of(page.text)
        version = (await gw.gateway.store.connections.get("c1")).version
        for data in ({}, {"csrf_token": "wrong"}, {"csrf_token": ""}):
            refused = await client.post("/dashboard/connections/c1/refresh", data=data)
            assert refused.status_code == 403
            assert "security token" in refused.text
        wrong_header = await client.post(
            "/dashboard/connections/c1/refresh", headers={"X-CSRF-Token": "nope"}
        )
        assert wrong_header.status_code == 403
        for action in ("diagnose", "reconnect-link", "delete"):
            assert (await client.post(f"/dashboard/connections/c1/{action}")).status_code == 403
        assert (await client.post("/dashboard/events/evt_x/redeliver")).status_code == 403
        assert (await client.post("/dashboard/logout")).status_code == 403
        assert (await gw.gateway.store.connections.get("c1")).version == version
        assert gw.grants() == 0
        ok = await client.post("/dashboard/connections/c1/refresh", data={"csrf_token": token})
        assert ok.status_code == 303
        assert gw.grants() == 1
        by_header = await client.post(
            "/dashboard/connections/c1/refresh", headers={"X-CSRF-Token": token}
        )
        assert by_header.status_code == 303
        assert gw.grants() == 2


async def test_the_login_form_needs_its_own_csrf_cookie(gw: GatewayUnderTest) -> None:
    async with browser(gw) as client:
        answer = await client.post(
            "/dashboard/login", data={"api_key": gw.api_key.reveal(), "csrf_token": "forged"}
        )
        assert answer.status_code == 403
        assert (await client.get("/dashboard")).status_code == 303


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/dashboard/logs?kind=call", "/dashboard/logs?kind=call"),
        ("https://evil.example/dashboard", "/dashboard"),
        ("//evil.example/dashboard", "/dashboard"),
        ("/dashboard\\..\\x", "/dashboard"),
        (None, "/dashboard"),
    ],
)
def test_the_next_page_after_login_stays_on_the_dashboard(given: str | None, expected: str) -> None:
    assert safe_next(given) == expected
