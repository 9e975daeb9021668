"""Session and token rules: expiry, IP lock, API Client Control, revocation, rotation,
refresh-token policies, the approvals cap, wrong instance and read-only mode."""

from __future__ import annotations

import httpx
import pytest
from emu_helpers import (
    client_from,
    code_grant,
    expired_grant,
    inactive_user,
    invalid_session,
    limits,
    password_grant,
    refresh,
)

from tokenkeep.emulator import Emulator


async def test_inactivity_timeout_with_the_half_timeout_bump(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    emu.admin.patch_org(org.org_id, {"session_timeout_seconds": 1000})
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    # Used at t=400 (< half the timeout): "last active" is NOT bumped...
    emu.admin.advance_clock(400)
    assert (await limits(http, org.instance_url, token)).status_code == 200
    # ...so at t=1001 the session is dead although it was used 601 s ago.
    emu.admin.advance_clock(601)
    invalid_session(await limits(http, org.instance_url, token))

    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    # Used at t=600 (>= half): bumped, so it lives until 600 + 1000.
    emu.admin.advance_clock(600)
    assert (await limits(http, org.instance_url, token)).status_code == 200
    emu.admin.advance_clock(900)
    assert (await limits(http, org.instance_url, token)).status_code == 200


async def test_token_of_org_a_on_org_b_and_data_call_on_login_host(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    token = (await password_grant(http, emu, emu.orgs[0].users[0]))["access_token"]
    invalid_session(await limits(http, emu.orgs[1].instance_url, token))
    on_login = await limits(http, emu.login_url, token)
    assert on_login.status_code == 400
    assert on_login.json() == [
        {
            "message": "Destination URL not reset. The URL returned from login must be set",
            "errorCode": "URL_NOT_RESET",
        }
    ]


async def test_ip_lock_compares_the_caller_with_the_address_that_got_the_token(
    emu: Emulator,
) -> None:
    org = emu.orgs[0]
    emu.admin.patch_org(org.org_id, {"lock_sessions_to_ip": True})
    async with client_from("127.0.0.2") as two, client_from("127.0.0.3") as three:
        token = (await password_grant(two, emu, org.users[0]))["access_token"]
        assert (await limits(two, org.instance_url, token)).status_code == 200
        invalid_session(await limits(three, org.instance_url, token))
        emu.admin.patch_org(org.org_id, {"lock_sessions_to_ip": False})
        assert (await limits(three, org.instance_url, token)).status_code == 200
    clients = {r["client"] for r in emu.admin.requests(path="/services/data/v60.0/limits")}
    assert clients == {"127.0.0.2", "127.0.0.3"}


async def test_api_client_control_allows_only_listed_apps(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org, app = emu.orgs[1], emu.apps[0]
    emu.admin.patch_org(org.org_id, {"api_client_control": True})
    # OAuth still succeeds; the REST call is refused.
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    invalid_session(
        await limits(http, org.instance_url, token),
        "This session is not valid for use with the REST API",
    )
    emu.admin.patch_org(org.org_id, {"allowed_client_ids": [app.client_id]})
    assert (await limits(http, org.instance_url, token)).status_code == 200


async def test_rotation_reuse_detection_revokes_the_whole_family(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org, app = emu.orgs[0], emu.apps[0]
    emu.admin.patch_app(app.client_id, {"rotate_refresh_tokens": True})
    first = (await code_grant(http, emu, org.users[0])).json()
    second = (await refresh(http, emu, first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await limits(http, org.instance_url, second["access_token"])).status_code == 200
    # Replaying the rotated-out token kills the current refresh token and its sessions.
    expired_grant(await refresh(http, emu, first["refresh_token"]))
    expired_grant(await refresh(http, emu, second["refresh_token"]))
    invalid_session(await limits(http, org.instance_url, second["access_token"]))


@pytest.mark.parametrize(
    ("policy", "advance", "alive"),
    [
        ("valid_until_revoked", 10 * 86400, True),
        ("immediately", 0, False),
        ("expire_after:3600", 3000, True),
        ("expire_after:3600", 3601, False),
        ("expire_if_unused:3600", 3601, False),
    ],
)
async def test_refresh_token_policies(
    emu: Emulator, http: httpx.AsyncClient, policy: str, advance: int, alive: bool
) -> None:
    app = emu.apps[0]
    emu.admin.patch_app(app.client_id, {"refresh_token_policy": policy})
    grant = (await code_grant(http, emu, emu.orgs[0].users[0])).json()
    emu.admin.advance_clock(advance)
    r = await refresh(http, emu, grant["refresh_token"])
    if alive:
        assert r.status_code == 200, r.text
    else:
        expired_grant(r)


async def test_expire_if_unused_is_reset_by_use(emu: Emulator, http: httpx.AsyncClient) -> None:
    emu.admin.patch_app(emu.apps[0].client_id, {"refresh_token_policy": "expire_if_unused:3600"})
    grant = (await code_grant(http, emu, emu.orgs[0].users[0])).json()
    for _ in range(3):
        emu.admin.advance_clock(3000)
        assert (await refresh(http, emu, grant["refresh_token"])).status_code == 200
    # Expire-after counts from the grant instead.
    emu.admin.patch_app(emu.apps[0].client_id, {"refresh_token_policy": "expire_after:3600"})
    expired_grant(await refresh(http, emu, grant["refresh_token"]))


async def test_sixth_approval_evicts_the_oldest_family(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    user = emu.orgs[0].users[0]
    grants = [(await code_grant(http, emu, user)).json() for _ in range(6)]
    expired_grant(await refresh(http, emu, grants[0]["refresh_token"]))
    for grant in grants[1:]:
        assert (await refresh(http, emu, grant["refresh_token"])).status_code == 200


@pytest.mark.parametrize("action", ["password", "deactivate", "revoke_user", "revoke_all"])
async def test_revocations_end_refresh_and_sessions(
    emu: Emulator, http: httpx.AsyncClient, action: str
) -> None:
    org, app = emu.orgs[0], emu.apps[0]
    user, other = org.users
    grant = (await code_grant(http, emu, user)).json()
    bystander = (await code_grant(http, emu, other)).json()
    if action == "password":
        emu.admin.set_password(user.username, "N3w-password!")
    elif action == "deactivate":
        emu.admin.deactivate(user.username)
    elif action == "revoke_user":
        emu.admin.revoke_app(app.client_id, user.username)
    else:
        emu.admin.revoke_app(app.client_id)
    if action == "deactivate":
        inactive_user(await refresh(http, emu, grant["refresh_token"]))
    else:
        expired_grant(await refresh(http, emu, grant["refresh_token"]))
    invalid_session(await limits(http, org.instance_url, grant["access_token"]))
    bystander_ok = (await refresh(http, emu, bystander["refresh_token"])).status_code == 200
    assert bystander_ok is (action != "revoke_all")


async def test_deactivated_user_cannot_log_in_and_the_error_is_configurable(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org, app = emu.orgs[0], emu.apps[0]
    user = org.users[0]
    emu.admin.deactivate(user.username)
    form = {
        "grant_type": "password",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "username": user.username,
        "password": user.password,
    }
    r = await http.post(emu.login_url + "/services/oauth2/token", data=form)
    assert r.status_code == 400
    assert r.json()["error"] == "inactive_user"
    emu.admin.patch_org(org.org_id, {"inactive_user_error": "invalid_grant"})
    r = await http.post(emu.login_url + "/services/oauth2/token", data=form)
    assert r.json()["error"] == "invalid_grant"


async def test_a_deactivated_users_refresh_says_inactive_unlike_a_password_change(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    deactivated, changed = org.users
    grant = (await code_grant(http, emu, deactivated)).json()
    other = (await code_grant(http, emu, changed)).json()
    emu.admin.deactivate(deactivated.username)
    emu.admin.set_password(changed.username, "N3w-password!")
    inactive_user(await refresh(http, emu, grant["refresh_token"]))
    expired_grant(await refresh(http, emu, other["refresh_token"]))
    # The org setting that switches a new login's error switches the refresh's too.
    emu.admin.patch_org(org.org_id, {"inactive_user_error": "invalid_grant"})
    inactive_user(await refresh(http, emu, grant["refresh_token"]), "invalid_grant")
    # Re-activated, the user's old grant stays revoked.
    emu.admin.activate(deactivated.username)
    expired_grant(await refresh(http, emu, grant["refresh_token"]))


async def test_killing_a_session_ends_its_access_token_but_not_its_refresh_token(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    user, other = org.users
    first = (await code_grant(http, emu, user)).json()
    second = (await code_grant(http, emu, user)).json()
    bystander = (await code_grant(http, emu, other)).json()
    # Setup -> Session Management -> Remove, for one session.
    r = await http.post(
        emu.admin_url + "/sessions/kill", json={"access_token": first["access_token"]}
    )
    assert (r.status_code, r.json()) == (200, {"killed": 1})
    invalid_session(await limits(http, org.instance_url, first["access_token"]))
    assert (await limits(http, org.instance_url, second["access_token"])).status_code == 200
    # The grant survives: a refresh brings a new working session.
    fresh = await refresh(http, emu, first["refresh_token"])
    assert fresh.status_code == 200, fresh.text
    assert (await limits(http, org.instance_url, fresh.json()["access_token"])).status_code == 200
    # Killing a dead session kills nothing more.
    assert emu.admin.kill_sessions(access_token=first["access_token"]) == {"killed": 0}
    # Every current session of the user: the second grant's and the refreshed one.
    r = await http.post(emu.admin_url + "/sessions/kill", json={"username": user.username})
    assert (r.status_code, r.json()) == (200, {"killed": 2})
    for token in (second["access_token"], fresh.json()["access_token"]):
        invalid_session(await limits(http, org.instance_url, token))
    assert (await limits(http, org.instance_url, bystander["access_token"])).status_code == 200
    for grant in (first, second):
        assert (await refresh(http, emu, grant["refresh_token"])).status_code == 200


async def test_read_only_mode_can_invalidate_sessions_but_not_refresh_tokens(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    grant = (await code_grant(http, emu, org.users[0])).json()
    emu.admin.patch_org(org.org_id, {"read_only": True})
    assert (await limits(http, org.instance_url, grant["access_token"])).status_code == 200
    emu.admin.patch_org(org.org_id, {"read_only": False, "invalidate_sessions_on_read_only": True})
    emu.admin.patch_org(org.org_id, {"read_only": True})
    invalid_session(await limits(http, org.instance_url, grant["access_token"]))
    fresh = (await refresh(http, emu, grant["refresh_token"])).json()
    assert (await limits(http, org.instance_url, fresh["access_token"])).status_code == 200


async def test_read_only_mode_fails_writes_with_the_maintenance_error(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    emu.admin.patch_org(org.org_id, {"read_only": True})
    r = await http.post(
        org.instance_url + "/services/data/v60.0/sobjects/Account",
        json={"Name": "Blocked"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 503
    assert r.json()[0]["errorCode"] == "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
    emu.admin.patch_org(org.org_id, {"maintenance_status_code": 400})
    r = await http.post(
        org.instance_url + "/services/data/v60.0/sobjects/Account",
        json={"Name": "Blocked"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 400


async def test_daily_api_limit_and_limit_info_header(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[1]
    emu.admin.patch_org(org.org_id, {"daily_api_limit": 2})
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    first = await limits(http, org.instance_url, token)
    assert first.headers["sforce-limit-info"] == "api-usage=1/2"
    assert (await limits(http, org.instance_url, token)).status_code == 200
    third = await limits(http, org.instance_url, token)
    assert third.status_code == 403
    assert third.json() == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    assert third.headers["sforce-limit-info"] == "api-usage=2/2"
    # The versions list needs no auth and is not counted.
    versions = await http.get(org.instance_url + "/services/data/")
    assert versions.status_code == 200
    assert "sforce-limit-info" not in versions.headers
    # A new (emulator) day starts a new allowance.
    emu.admin.advance_clock(86400)
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    assert (await limits(http, org.instance_url, token)).headers["sforce-limit-info"] == (
        "api-usage=1/2"
    )


async def test_instance_move_new_host_serves_old_host_refuses(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    old_url = org.instance_url
    grant = (await code_grant(http, emu, org.users[0])).json()
    moved = emu.admin.patch_org(org.org_id, {"instance_url": "new"})
    assert moved["instance_url"] != old_url
    assert org.instance_url == moved["instance_url"]
    invalid_session(await limits(http, old_url, grant["access_token"]))
    fresh = (await refresh(http, emu, grant["refresh_token"])).json()
    assert fresh["instance_url"] == org.instance_url
    assert (await limits(http, org.instance_url, fresh["access_token"])).status_code == 200
    # Over HTTP too, and moving back to the original host works.
    back = await http.patch(f"{emu.admin_url}/orgs/{org.org_id}", json={"instance_url": old_url})
    assert back.status_code == 200
    assert back.json()["instance_url"] == old_url
    assert (await limits(http, old_url, fresh["access_token"])).status_code == 200


@pytest.mark.salesforce_emulator(apps=2)
async def test_api_client_control_distinguishes_apps(
    salesforce_emulator: Emulator, http: httpx.AsyncClient
) -> None:
    emu = salesforce_emulator
    org = emu.orgs[0]
    listed, unlisted = emu.apps
    emu.admin.patch_org(
        org.org_id, {"api_client_control": True, "allowed_client_ids": [listed.client_id]}
    )
    user = org.users[0]
    tokens = {}
    for app in emu.apps:
        r = await http.post(
            emu.login_url + "/services/oauth2/token",
            data={
                "grant_type": "password",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "username": user.username,
                "password": user.password,
            },
        )
        tokens[app.client_id] = r.json()["access_token"]
    assert (await limits(http, org.instance_url, tokens[listed.client_id])).status_code == 200
    invalid_session(
        await limits(http, org.instance_url, tokens[unlisted.client_id]),
        "This session is not valid for use with the REST API",
    )


async def test_admin_approved_only_apps_refuse_other_users(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    app = emu.apps[0]
    approved, other = emu.orgs[0].users  # only the admin user is pre-authorized
    grant = (await code_grant(http, emu, other)).json()
    emu.admin.patch_app(app.client_id, {"admin_approved_only": True})
    r = await refresh(http, emu, grant["refresh_token"])
    assert r.status_code == 400
    assert r.json() == {
        "error": "invalid_app_access",
        "error_description": "user is not admin approved to access this app",
    }
    assert (await code_grant(http, emu, other)).json()["error"] == "invalid_app_access"
    assert (await code_grant(http, emu, approved)).status_code == 200


async def test_login_ip_ranges_refuse_logins_and_refreshes_from_elsewhere(
    emu: Emulator,
) -> None:
    org = emu.orgs[0]
    async with client_from("127.0.0.2") as inside, client_from("127.0.0.3") as outside:
        grant = (await code_grant(inside, emu, org.users[0])).json()
        emu.admin.patch_org(org.org_id, {"login_ip_ranges": ["127.0.0.2/32"]})
        assert (await refresh(inside, emu, grant["refresh_token"])).status_code == 200
        r = await refresh(outside, emu, grant["refresh_token"])
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid_grant",
            "error_description": "IP restricted or invalid login hours",
        }


async def test_connected_app_session_timeout_overrides_the_orgs(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    org = emu.orgs[0]
    emu.admin.patch_app(emu.apps[0].client_id, {"session_timeout_seconds": 900})
    token = (await password_grant(http, emu, org.users[0]))["access_token"]
    emu.admin.advance_clock(901)
    invalid_session(await limits(http, org.instance_url, token))
