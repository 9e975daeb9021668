"""The token, revoke, introspect, userinfo and identity endpoints speak SALESFORCE.md."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
import jwt
import pytest
from emu_helpers import REDIRECT, TOKEN_PATH, code_grant, password_grant, pkce_pair, refresh

from tokenkeep.emulator import Emulator


async def test_password_grant_has_the_exact_salesforce_shape(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org, app = emu.orgs[0], emu.apps[0]
    user = org.users[0]
    body = await password_grant(http, emu, user)
    assert set(body) == {
        "access_token",
        "signature",
        "scope",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
    }
    assert "expires_in" not in body
    assert body["access_token"].startswith(org.org_id[:15] + "!")
    assert body["instance_url"] == org.instance_url
    assert body["id"] == f"{emu.login_url}/id/{org.org_id}/{user.user_id}"
    assert len(org.org_id) == 18
    assert org.org_id.startswith("00D")
    assert body["token_type"] == "Bearer"
    assert isinstance(body["issued_at"], str)
    assert body["issued_at"].isdigit()
    assert abs(int(body["issued_at"]) / 1000 - emu.clock.time()) < 60
    expected = base64.b64encode(
        hmac.new(
            app.client_secret.encode(), (body["id"] + body["issued_at"]).encode(), hashlib.sha256
        ).digest()
    ).decode()
    assert body["signature"] == expected


async def test_authorization_code_returns_refresh_token_only_with_refresh_scope(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    user = emu.orgs[0].users[1]
    with_refresh = await code_grant(http, emu, user, scope="api refresh_token")
    assert with_refresh.status_code == 200
    assert with_refresh.json()["refresh_token"]
    assert with_refresh.json()["scope"] == "api refresh_token"
    without = await code_grant(http, emu, user, scope="api")
    assert without.status_code == 200
    assert "refresh_token" not in without.json()


async def test_refresh_without_rotation_returns_no_new_refresh_token(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    grant = (await code_grant(http, emu, emu.orgs[1].users[0])).json()
    r = await refresh(http, emu, grant["refresh_token"])
    assert r.status_code == 200
    body = r.json()
    assert "refresh_token" not in body
    assert body["access_token"] != grant["access_token"]
    assert body["instance_url"] == emu.orgs[1].instance_url


async def test_code_is_single_use_and_redirect_uri_must_match(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app, user = emu.apps[0], emu.orgs[0].users[0]
    code = emu.admin.authorize(
        {"client_id": app.client_id, "username": user.username, "redirect_uri": REDIRECT}
    )["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "redirect_uri": "http://evil.example/cb",
    }
    r = await http.post(emu.login_url + TOKEN_PATH, data=form)
    assert r.status_code == 400
    assert r.json()["error"] == "redirect_uri_mismatch"
    # A code is consumed by its first redemption, even a failed one.
    form["redirect_uri"] = REDIRECT
    r = await http.post(emu.login_url + TOKEN_PATH, data=form)
    assert r.json() == {"error": "invalid_grant", "error_description": "invalid authorization code"}


async def test_pkce_is_enforced_when_a_challenge_was_sent(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app, user = emu.apps[0], emu.orgs[0].users[0]
    verifier, challenge = pkce_pair()

    async def redeem(code_verifier: str | None) -> httpx.Response:
        code = emu.admin.authorize(
            {
                "client_id": app.client_id,
                "username": user.username,
                "redirect_uri": REDIRECT,
                "code_challenge": challenge,
            }
        )["code"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": app.client_id,
            "redirect_uri": REDIRECT,
        }
        if code_verifier is not None:
            form["code_verifier"] = code_verifier
        return await http.post(emu.login_url + TOKEN_PATH, data=form)

    for bad in (None, "w" * 64):
        r = await redeem(bad)
        assert r.status_code == 400
        assert r.json() == {"error": "invalid_grant", "error_description": "invalid code verifier"}
    ok = await redeem(verifier)  # no client_secret needed with PKCE
    assert ok.status_code == 200, ok.text
    assert ok.json()["refresh_token"]


async def test_code_without_pkce_needs_the_client_secret(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app, user = emu.apps[0], emu.orgs[0].users[0]
    code = emu.admin.authorize(
        {"client_id": app.client_id, "username": user.username, "redirect_uri": REDIRECT}
    )["code"]
    r = await http.post(
        emu.login_url + TOKEN_PATH,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": app.client_id,
            "redirect_uri": REDIRECT,
        },
    )
    assert r.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }


async def test_client_auth_by_http_basic_and_client_errors(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app, user = emu.apps[0], emu.orgs[0].users[0]
    form = {"grant_type": "password", "username": user.username, "password": user.password}
    ok = await http.post(
        emu.login_url + TOKEN_PATH, data=form, auth=(app.client_id, app.client_secret)
    )
    assert ok.status_code == 200
    wrong = await http.post(emu.login_url + TOKEN_PATH, data=form, auth=(app.client_id, "nope"))
    assert wrong.status_code == 400
    assert wrong.json() == {
        "error": "invalid_client",
        "error_description": "invalid client credentials",
    }
    assert wrong.headers["cache-control"] == "no-store"
    unknown = await http.post(emu.login_url + TOKEN_PATH, data=form, auth=("3MVG9nope", "x"))
    assert unknown.json() == {
        "error": "invalid_client_id",
        "error_description": "client identifier invalid",
    }
    bad_pw = await http.post(
        emu.login_url + TOKEN_PATH,
        data={**form, "password": "wrong"},
        auth=(app.client_id, app.client_secret),
    )
    assert bad_pw.json() == {
        "error": "invalid_grant",
        "error_description": "authentication failure",
    }
    grant = await http.post(emu.login_url + TOKEN_PATH, data={"grant_type": "implicit"})
    assert grant.json() == {
        "error": "unsupported_grant_type",
        "error_description": "grant type not supported",
    }


async def test_jwt_bearer_for_a_pre_authorized_user(emu: Emulator, http: httpx.AsyncClient) -> None:
    org = emu.orgs[0]
    admin_user, plain_user = org.users
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    ok = await http.post(
        emu.login_url + TOKEN_PATH, data={**grant, "assertion": emu.mint_jwt(admin_user.username)}
    )
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert "refresh_token" not in body
    assert body["instance_url"] == org.instance_url
    assert body["access_token"].startswith(org.org_id[:15] + "!")

    async def error_of(assertion: str) -> dict[str, str]:
        r = await http.post(emu.login_url + TOKEN_PATH, data={**grant, "assertion": assertion})
        assert r.status_code == 400
        return r.json()

    assert await error_of(emu.mint_jwt(plain_user.username)) == {
        "error": "invalid_grant",
        "error_description": "user hasn't approved this consumer",
    }
    assert await error_of(
        emu.mint_jwt(admin_user.username, audience="https://login.salesforce.com")
    ) == {"error": "invalid_grant", "error_description": "Audience validation failed"}
    too_long = await error_of(emu.mint_jwt(admin_user.username, lifetime=600))
    assert too_long["error"] == "invalid_grant"
    expired = await error_of(emu.mint_jwt(admin_user.username, lifetime=-60))
    assert expired["error"] == "invalid_grant"
    # Signed with another key: rejected.
    from tokenkeep.emulator.keys import new_app_keypair

    other_key, _ = new_app_keypair()
    forged = jwt.encode(
        {
            "iss": emu.apps[0].client_id,
            "sub": admin_user.username,
            "aud": emu.login_url,
            "exp": int(emu.clock.time()) + 60,
        },
        other_key,
        algorithm="RS256",
    )
    assert await error_of(forged) == {
        "error": "invalid_grant",
        "error_description": "invalid assertion",
    }
    # Pre-authorizing the user (admin) makes the same assertion work.
    emu.admin.patch_app(emu.apps[0].client_id, {"pre_authorized_usernames": [plain_user.username]})
    r = await http.post(
        emu.login_url + TOKEN_PATH, data={**grant, "assertion": emu.mint_jwt(plain_user.username)}
    )
    assert r.status_code == 200


async def test_client_credentials_only_on_my_domain(emu: Emulator, http: httpx.AsyncClient) -> None:
    app, org = emu.apps[0], emu.orgs[1]
    form = {"grant_type": "client_credentials"}
    auth = (app.client_id, app.client_secret)
    on_login = await http.post(emu.login_url + TOKEN_PATH, data=form, auth=auth)
    assert on_login.status_code == 400
    assert on_login.json() == {
        "error": "invalid_grant",
        "error_description": "request not supported on this domain",
    }
    on_domain = await http.post(org.my_domain_url + TOKEN_PATH, data=form, auth=auth)
    assert on_domain.status_code == 200, on_domain.text
    body = on_domain.json()
    assert body["id"].endswith(f"/{org.org_id}/{org.users[0].user_id}")  # the run-as user
    assert "refresh_token" not in body


async def test_revoke_refresh_token_revokes_its_access_tokens(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    grant = (await code_grant(http, emu, org.users[0])).json()
    headers = {"Authorization": f"Bearer {grant['access_token']}"}
    assert (
        await http.get(org.instance_url + "/services/data/v60.0/limits", headers=headers)
    ).status_code == 200
    r = await http.post(
        emu.login_url + "/services/oauth2/revoke", data={"token": grant["refresh_token"]}
    )
    assert r.status_code == 200
    assert r.content == b""
    after = await http.get(org.instance_url + "/services/data/v60.0/limits", headers=headers)
    assert after.status_code == 401
    again = await refresh(http, emu, grant["refresh_token"])
    assert again.json()["error"] == "invalid_grant"
    unknown = await http.post(emu.login_url + "/services/oauth2/revoke", data={"token": "nope"})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_token"


async def test_introspect_times_are_epoch_seconds_of_the_emulator_clock(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app, org = emu.apps[0], emu.orgs[0]
    grant = (await code_grant(http, emu, org.users[0])).json()
    auth = (app.client_id, app.client_secret)
    url = emu.login_url + "/services/oauth2/introspect"
    r = await http.post(
        url, data={"token": grant["access_token"], "token_type_hint": "access_token"}, auth=auth
    )
    body = r.json()
    assert body["active"] is True
    assert body["client_id"] == app.client_id
    assert body["username"] == org.users[0].username
    assert body["token_type"] == "access_token"
    assert body["iat"] == int(grant["issued_at"]) // 1000
    assert body["exp"] - body["iat"] == 7200
    rt = await http.post(url, data={"token": grant["refresh_token"]}, auth=auth)
    assert rt.json()["active"] is True
    assert rt.json()["token_type"] == "refresh_token"
    assert (await http.post(url, data={"token": "junk"}, auth=auth)).json() == {"active": False}
    emu.admin.advance_clock(7201)
    assert (await http.post(url, data={"token": grant["access_token"]}, auth=auth)).json() == {
        "active": False
    }
    no_auth = await http.post(url, data={"token": grant["access_token"]})
    assert no_auth.status_code == 400


async def test_userinfo_and_identity_url(emu: Emulator, http: httpx.AsyncClient) -> None:
    org = emu.orgs[1]
    user = org.users[1]
    grant = await password_grant(http, emu, user)
    headers = {"Authorization": f"Bearer {grant['access_token']}"}
    ident = await http.get(grant["id"], headers=headers)
    assert ident.status_code == 200
    doc = ident.json()
    assert doc["user_id"] == user.user_id
    assert doc["organization_id"] == org.org_id
    assert doc["username"] == user.username
    assert doc["urls"]["rest"] == org.instance_url + "/services/data/v{version}/"
    info = await http.get(emu.login_url + "/services/oauth2/userinfo", headers=headers)
    assert info.json()["preferred_username"] == user.username
    for url in (grant["id"], emu.login_url + "/services/oauth2/userinfo"):
        bad = await http.get(url, headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 403
        assert bad.text == "Bad_OAuth_Token"
        assert bad.headers["content-type"].startswith("text/plain")


@pytest.mark.salesforce_emulator(apps=2)
async def test_an_app_may_only_introspect_its_own_tokens(
    salesforce_emulator: Emulator, http: httpx.AsyncClient
) -> None:
    emu = salesforce_emulator
    mine, other = emu.apps
    grant = (await code_grant(http, emu, emu.orgs[0].users[0])).json()  # issued to `mine`
    url = emu.login_url + "/services/oauth2/introspect"
    theirs = await http.post(
        url, data={"token": grant["access_token"]}, auth=(other.client_id, other.client_secret)
    )
    assert theirs.json() == {"active": False}
    own = await http.post(
        url, data={"token": grant["access_token"]}, auth=(mine.client_id, mine.client_secret)
    )
    assert own.json()["active"] is True
    # A refresh token only refreshes for the app it was issued to.
    r = await refresh(http, emu, grant["refresh_token"], app=other)
    assert r.json()["error"] == "invalid_grant"
