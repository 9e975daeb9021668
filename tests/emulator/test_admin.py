"""The admin API over HTTP: validation, the request log, faults, clock and reset."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from emu_helpers import REDIRECT, TOKEN_PATH, code_grant, limits, password_grant, refresh

from tokenkeep.emulator import Emulator
from tokenkeep.emulator.oauth import JWT_BEARER


async def test_state_lists_orgs_users_apps_with_credentials(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    r = await http.get(emu.admin_url + "/state")
    assert r.status_code == 200
    state = r.json()
    assert state["login_url"] == emu.login_url
    assert [o["org_id"] for o in state["orgs"]] == [o.org_id for o in emu.orgs]
    assert state["orgs"][0]["users"][0]["password"] == emu.orgs[0].users[0].password
    assert state["apps"][0]["client_secret"] == emu.apps[0].client_secret
    assert "BEGIN PRIVATE KEY" in state["apps"][0]["private_key_pem"]
    assert state["orgs"][0]["session_timeout_seconds"] == 7200


@pytest.mark.parametrize(
    "case",
    [
        ("PATCH", "/orgs/00Dnope", {"read_only": True}, 404),
        ("PATCH", "/orgs/{org}", {"read_only": "yes"}, 400),
        ("PATCH", "/orgs/{org}", {"session_timeout_seconds": 0}, 400),
        ("PATCH", "/orgs/{org}", {"colour": "blue"}, 400),
        ("PATCH", "/apps/{app}", {"refresh_token_policy": "expire_after:soon"}, 400),
        ("PATCH", "/apps/{app}", {"refresh_token_policy": "forever"}, 400),
        ("PATCH", "/apps/{app}", {"max_approvals": 0}, 400),
        ("PATCH", "/apps/3MVG9nope", {"max_approvals": 3}, 404),
        ("POST", "/users/nobody@example.com/deactivate", {}, 404),
        ("POST", "/users/{user}/password", {}, 400),
        ("POST", "/clock/advance", {"seconds": -5}, 400),
        ("POST", "/faults", {"target": "token", "kind": "error", "status": 200}, 400),
        ("POST", "/faults", {"target": "everything", "kind": "drop"}, 400),
        ("POST", "/authorize", {"client_id": "{app}", "username": "{user}"}, 400),
        ("POST", "/sessions/kill", {}, 400),
        ("POST", "/sessions/kill", {"access_token": "00Dnope!x", "username": "{user}"}, 400),
        ("POST", "/sessions/kill", {"access_token": 5}, 400),
        ("POST", "/sessions/kill", {"username": ""}, 400),
        ("POST", "/sessions/kill", {"session": "x"}, 400),
        ("POST", "/sessions/kill", {"access_token": "00Dnope!x"}, 404),
        ("POST", "/sessions/kill", {"username": "nobody@example.com"}, 404),
        ("GET", "/nothing-here", None, 404),
    ],
)
async def test_admin_input_is_validated(
    emu: Emulator, http: httpx.AsyncClient, case: tuple[str, str, dict | None, int]
) -> None:
    method, path, body, status = case
    names = {
        "org": emu.orgs[0].org_id,
        "app": emu.apps[0].client_id,
        "user": emu.orgs[0].users[0].username,
    }
    url = emu.admin_url + path.format(**names)
    if body is not None:
        body = {k: v.format(**names) if isinstance(v, str) else v for k, v in body.items()}
    r = await http.request(method, url, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] in ("bad_request", "not_found")
    assert error["message"]
    before = emu.admin.get_state()
    assert before["orgs"][0]["read_only"] is False  # nothing half-applied


async def test_request_log_counts_token_grants_exactly(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org_a, org_b = emu.orgs
    since = emu.clock.time()
    grant = (await code_grant(http, emu, org_a.users[0])).json()
    for _ in range(3):
        await refresh(http, emu, grant["refresh_token"])
    await password_grant(http, emu, org_b.users[0])
    await limits(http, org_a.instance_url, grant["access_token"])
    q = {"since": since}
    r = await http.get(emu.admin_url + "/requests", params={**q, "grant_type": "refresh_token"})
    refreshes = r.json()["requests"]
    assert len(refreshes) == 3
    assert {e["org_id"] for e in refreshes} == {org_a.org_id}
    assert all(e["status"] == 200 and e["path"] == TOKEN_PATH for e in refreshes)
    by_org = await http.get(
        emu.admin_url + "/requests", params={**q, "org_id": org_b.org_id, "path": TOKEN_PATH}
    )
    assert [e["grant_type"] for e in by_org.json()["requests"]] == ["password"]
    data = emu.admin.requests(path="/services/data", since=since)
    assert len(data) == 1
    assert data[0]["host"] == org_a.instance_url
    assert data[0]["client"] == "127.0.0.1"
    assert data[0]["method"] == "GET"


async def test_request_log_records_error_codes(emu: Emulator, http: httpx.AsyncClient) -> None:
    await limits(http, emu.orgs[0].instance_url, "00Dbogus!token")
    await refresh(http, emu, "not-a-token")
    codes = [e["errorCode"] for e in emu.admin.requests()]
    assert codes == ["INVALID_SESSION_ID", "invalid_grant"]


async def test_token_endpoint_outage_for_the_next_n_calls(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    r = await http.post(
        emu.admin_url + "/faults",
        json={"target": "token", "kind": "error", "status": 503, "count": 2},
    )
    assert r.status_code == 200
    user = emu.orgs[0].users[0]
    statuses = []
    for _ in range(3):
        resp = await http.post(
            emu.login_url + TOKEN_PATH,
            data={
                "grant_type": "password",
                "client_id": emu.apps[0].client_id,
                "client_secret": emu.apps[0].client_secret,
                "username": user.username,
                "password": user.password,
            },
        )
        statuses.append(resp.status_code)
    assert statuses == [503, 503, 200]
    failed = emu.admin.requests(grant_type="password")
    assert [e["status"] for e in failed] == [503, 503, 200]


async def test_data_fault_for_a_duration_ends_with_the_clock(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[1]
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    emu.admin.add_fault(
        {
            "target": "data",
            "kind": "error",
            "status": 500,
            "duration_seconds": 60,
            "org_id": org.org_id,
        }
    )
    bad = await limits(http, org.instance_url, token)
    assert bad.status_code == 500
    assert bad.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    emu.admin.advance_clock(61)
    assert (await limits(http, org.instance_url, token)).status_code == 200


async def test_connection_drop_and_latency_faults(emu: Emulator, http: httpx.AsyncClient) -> None:
    org = emu.orgs[0]
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    emu.admin.add_fault({"target": "data", "kind": "drop", "count": 1})
    with pytest.raises(httpx.TransportError):
        await limits(http, org.instance_url, token)
    assert emu.admin.requests()[-1]["errorCode"] == "CONNECTION_DROPPED"
    emu.admin.add_fault({"target": "data", "kind": "latency", "latency_seconds": 0.05, "count": 1})
    assert (await limits(http, org.instance_url, token)).status_code == 200
    assert (await http.get(emu.admin_url + "/faults")).json() == {"faults": []}


async def test_clock_advance_over_http(emu: Emulator, http: httpx.AsyncClient) -> None:
    before = emu.clock.time()
    r = await http.post(emu.admin_url + "/clock/advance", json={"seconds": 3600})
    assert r.status_code == 200
    assert r.json()["time"] >= before + 3600


async def test_headless_authorize_over_http_returns_code_and_state(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app, user = emu.apps[0], emu.orgs[0].users[0]
    r = await http.post(
        emu.admin_url + "/authorize",
        json={
            "client_id": app.client_id,
            "username": user.username,
            "redirect_uri": "http://localhost/callback",
            "state": "xyz",
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["redirect_url"].startswith("http://localhost/callback?code=")
    assert body["redirect_url"].endswith("&state=xyz")


async def test_reset_forgets_tokens_and_restores_settings(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org, app = emu.orgs[0], emu.apps[0]
    grant = (await code_grant(http, emu, org.users[0])).json()
    original_url = org.instance_url
    original_password = org.users[1].password
    emu.admin.patch_org(org.org_id, {"lock_sessions_to_ip": True, "instance_url": "new"})
    emu.admin.patch_app(app.client_id, {"rotate_refresh_tokens": True})
    emu.admin.set_password(org.users[1].username, "Changed-1")
    r = await http.post(emu.admin_url + "/reset")
    assert r.status_code == 200
    assert org.instance_url == original_url
    assert org.lock_sessions_to_ip is False
    assert app.rotate_refresh_tokens is False
    assert org.users[1].password == original_password
    assert emu.admin.requests() == []
    assert (await refresh(http, emu, grant["refresh_token"])).status_code == 400
    token = (await password_grant(http, emu, org.users[1]))["access_token"]
    assert (await limits(http, original_url, token)).status_code == 200


async def test_dropped_token_calls_are_logged_with_their_grant_type(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    emu.admin.add_fault({"target": "token", "kind": "drop", "count": 1})
    with pytest.raises(httpx.TransportError):
        await password_grant(http, emu, emu.orgs[0].users[0])
    await password_grant(http, emu, emu.orgs[0].users[0])
    logged = emu.admin.requests(grant_type="password")
    assert [(e["status"], e["errorCode"]) for e in logged] == [
        (0, "CONNECTION_DROPPED"),
        (200, None),
    ]


async def test_python_admin_takes_keywords_too(emu: Emulator) -> None:
    org, app = emu.orgs[0], emu.apps[0]
    assert (
        emu.admin.patch_org(org.org_id, session_timeout_seconds=900)["session_timeout_seconds"]
        == 900
    )
    assert emu.admin.patch_app(app.client_id, rotate_refresh_tokens=True)["rotate_refresh_tokens"]
    fault = emu.admin.add_fault(target="data", kind="error", count=1)
    assert fault["remaining"] == 1
    code = emu.admin.authorize(
        client_id=app.client_id,
        username=org.users[0].username,
        redirect_uri="http://localhost/callback",
    )
    assert code["code"]


async def test_a_token_fault_for_one_org_hits_only_that_orgs_grants_on_the_login_host(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app = emu.apps[0]
    secret = {"client_id": app.client_id, "client_secret": app.client_secret}
    # Grants made before the fault: one refresh token per org.
    refresh_tokens = [
        (await code_grant(http, emu, o.users[0])).json()["refresh_token"] for o in emu.orgs
    ]
    codes = [
        emu.admin.authorize(
            client_id=app.client_id, username=o.users[0].username, redirect_uri=REDIRECT
        )["code"]
        for o in emu.orgs
    ]
    target, bystander = emu.orgs
    emu.admin.add_fault(target="token", kind="error", status=503, org_id=target.org_id)

    def forms(i: int) -> dict[str, dict[str, str]]:
        user = emu.orgs[i].users[0]
        return {
            "password": {
                "grant_type": "password",
                "username": user.username,
                "password": user.password,
                **secret,
            },
            "refresh_token": {
                "grant_type": "refresh_token",
                "refresh_token": refresh_tokens[i],
                **secret,
            },
            JWT_BEARER: {"grant_type": JWT_BEARER, "assertion": emu.mint_jwt(user.username)},
            "authorization_code": {
                "grant_type": "authorization_code",
                "code": codes[i],
                "redirect_uri": REDIRECT,
                **secret,
            },
        }

    for i, org in enumerate(emu.orgs):
        expected = 503 if org is target else 200
        for grant, form in forms(i).items():
            r = await http.post(emu.login_url + TOKEN_PATH, data=form)
            assert r.status_code == expected, (org.name, grant, r.text)
        # client_credentials runs on the org's My Domain host: the host names the org.
        r = await http.post(
            org.my_domain_url + TOKEN_PATH, data={"grant_type": "client_credentials", **secret}
        )
        assert r.status_code == expected, (org.name, "client_credentials", r.text)
    # The log names the org of each failed call, and only the target's calls failed.
    failed = [e for e in emu.admin.requests(path=TOKEN_PATH) if e["status"] == 503]
    assert [e["org_id"] for e in failed] == [target.org_id] * 5
    assert all(e["status"] == 200 for e in emu.admin.requests(org_id=bystander.org_id))


async def test_a_refresh_while_the_same_token_is_in_flight_is_already_being_processed(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """Salesforce's concurrent-refresh answer: while one refresh of a token is being
    processed (slowed by a latency fault), a second refresh of the same token is refused
    with ``invalid_grant`` / "token request is already being processed"; the slow one
    succeeds, and afterwards the token refreshes normally again."""
    first_token = (await code_grant(http, emu, emu.orgs[0].users[0])).json()["refresh_token"]
    other_token = (await code_grant(http, emu, emu.orgs[1].users[0])).json()["refresh_token"]
    emu.admin.add_fault(target="token", kind="latency", latency_seconds=0.5, count=1)
    slow = asyncio.create_task(refresh(http, emu, first_token))
    while not emu.state.refreshing:
        await asyncio.sleep(0.01)
    concurrent = await refresh(http, emu, first_token)
    unrelated = await refresh(http, emu, other_token)
    assert concurrent.status_code == 400
    assert concurrent.json() == {
        "error": "invalid_grant",
        "error_description": "token request is already being processed",
    }
    assert unrelated.status_code == 200, unrelated.text
    assert (await slow).status_code == 200
    assert emu.state.refreshing == set()
    assert (await refresh(http, emu, first_token)).status_code == 200
    logged = emu.admin.requests(grant_type="refresh_token")
    assert [(e["status"], e["errorCode"]) for e in logged] == [
        (400, "invalid_grant"),
        (200, None),
        (200, None),
        (200, None),
    ]
