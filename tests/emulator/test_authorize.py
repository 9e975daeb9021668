"""The browser flow of /services/oauth2/authorize: login form, approve page, redirects."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
from emu_helpers import REDIRECT, TOKEN_PATH, pkce_pair

from tokenkeep.emulator import Emulator

AUTHORIZE = "/services/oauth2/authorize"


def _hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def _query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def _login(
    http: httpx.AsyncClient, base: str, params: dict[str, str], username: str, password: str
) -> httpx.Response:
    page = await http.get(base + AUTHORIZE, params=params)
    assert page.status_code == 200
    assert 'name="username"' in page.text
    assert 'type="password"' in page.text
    form = _hidden_fields(page.text)
    return await http.post(
        base + AUTHORIZE, data={**form, "username": username, "password": password}
    )


async def test_login_approve_redirect_and_redeem_with_pkce(emu: Emulator) -> None:
    app, user = emu.apps[0], emu.orgs[0].users[0]
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": REDIRECT,
        "state": "s-123",
        "scope": "api refresh_token",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        approve = await _login(http, emu.login_url, params, user.username, user.password)
        assert approve.status_code == 200
        assert "Allow" in approve.text
        fields = _hidden_fields(approve.text)
        done = await http.post(emu.login_url + AUTHORIZE, data={**fields, "decision": "allow"})
        assert done.status_code == 302
        query = _query(done.headers["location"])
        assert done.headers["location"].startswith(REDIRECT + "?")
        assert query["state"] == "s-123"
        r = await http.post(
            emu.login_url + TOKEN_PATH,
            data={
                "grant_type": "authorization_code",
                "code": query["code"],
                "client_id": app.client_id,
                "redirect_uri": REDIRECT,
                "code_verifier": verifier,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["refresh_token"]
        # Logged in and approved: a second authorize redirects at once (SSO)...
        again = await http.get(emu.login_url + AUTHORIZE, params=params)
        assert again.status_code == 302
        assert "code" in _query(again.headers["location"])
        # ...unless prompt=login asks for the password again.
        forced = await http.get(emu.login_url + AUTHORIZE, params={**params, "prompt": "login"})
        assert forced.status_code == 200
        assert 'type="password"' in forced.text


async def test_deny_redirects_with_access_denied(emu: Emulator) -> None:
    app, user = emu.apps[0], emu.orgs[1].users[1]
    params = {
        "response_type": "code",
        "client_id": app.client_id,
        "redirect_uri": REDIRECT,
        "state": "abc",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        approve = await _login(http, emu.login_url, params, user.username, user.password)
        fields = _hidden_fields(approve.text)
        denied = await http.post(emu.login_url + AUTHORIZE, data={**fields, "decision": "deny"})
    assert denied.status_code == 302
    query = _query(denied.headers["location"])
    assert query["error"] == "access_denied"
    assert query["state"] == "abc"


async def test_bad_password_shows_the_form_again(emu: Emulator) -> None:
    app, user = emu.apps[0], emu.orgs[0].users[0]
    params = {"response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT}
    async with httpx.AsyncClient(timeout=10) as http:
        r = await _login(http, emu.login_url, params, user.username, "wrong")
    assert r.status_code == 401
    assert "check your username and password" in r.text


async def test_my_domain_login_only_accepts_that_orgs_users(emu: Emulator) -> None:
    app = emu.apps[0]
    params = {"response_type": "code", "client_id": app.client_id, "redirect_uri": REDIRECT}
    stranger = emu.orgs[1].users[0]
    async with httpx.AsyncClient(timeout=10) as http:
        r = await _login(
            http, emu.orgs[0].my_domain_url, params, stranger.username, stranger.password
        )
    assert r.status_code == 401


async def test_unregistered_redirect_uri_is_never_redirected_to(emu: Emulator) -> None:
    params = {
        "response_type": "code",
        "client_id": emu.apps[0].client_id,
        "redirect_uri": "http://evil.example/cb",
    }
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(emu.login_url + AUTHORIZE, params=params)
        assert r.status_code == 400
        assert "location" not in r.headers
        none = await http.get(
            emu.login_url + AUTHORIZE,
            params={**params, "redirect_uri": REDIRECT, "prompt": "none"},
        )
    assert none.status_code == 302
    assert _query(none.headers["location"])["error"] == "login_required"
