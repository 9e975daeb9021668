"""One scenario per cause of a dead Salesforce session, end to end over real sockets.

Each scenario plays what an integration sees: it connects through the authorization-code
flow (refresh token included), makes a working data call, then the cause happens and the
test asserts the exact wire answer of shared/SALESFORCE.md (status, JSON body, errorCode)
and what does or does not bring the integration back (refresh, another address, the
allow-list). The emulator's request log is checked where a count matters.

Source addresses: Linux routes all of 127.0.0.0/8 to loopback, so a client bound to
127.0.0.2 or 127.0.0.3 reaches the emulator on 127.0.0.1 from a different address.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tokenkeep.emulator import Emulator
from tokenkeep.emulator.state import Org, User

TOKEN = "/services/oauth2/token"
API = "/services/data/v60.0"
EXPIRED_OR_INVALID = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
NOT_FOR_REST = [
    {
        "message": "This session is not valid for use with the REST API",
        "errorCode": "INVALID_SESSION_ID",
    }
]
URL_NOT_RESET = [
    {
        "message": "Destination URL not reset. The URL returned from login must be set",
        "errorCode": "URL_NOT_RESET",
    }
]
MAINTENANCE = [
    {
        "message": "Updates can't be made during maintenance. "
        "Try again when maintenance is complete.",
        "errorCode": "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE",
    }
]
INVALID_GRANT = {"error": "invalid_grant", "error_description": "expired access/refresh token"}
INACTIVE_USER = {"error": "inactive_user", "error_description": "user is inactive"}


@dataclass
class Grant:
    """What an integration stores after connecting: tokens and the instance URL."""

    access_token: str
    refresh_token: str
    instance_url: str


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    """Two orgs with seeded data (org 0 is the one the scenarios connect to).

    Overrides this directory's conftest ``emu`` to pin the seed, so the scenarios do not
    depend on how the shared fixture is configured.
    """
    async with Emulator.running(orgs=2, seed=5) as running:
        yield running


def _client(address: str = "127.0.0.1") -> httpx.AsyncClient:
    """An HTTP client whose connections leave from ``address``."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address), timeout=10)


async def _connect(emu: Emulator, http: httpx.AsyncClient, user: User | None = None) -> Grant:
    """The authorization-code flow (headless approval) for org 0's first user."""
    app = emu.apps[0]
    user = user or emu.orgs[0].users[0]
    code = emu.admin.authorize(
        {
            "client_id": app.client_id,
            "username": user.username,
            "redirect_uri": app.redirect_uris[0],
            "scope": "api refresh_token",
        }
    )["code"]
    response = await http.post(
        emu.login_url + TOKEN,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "redirect_uri": app.redirect_uris[0],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Grant(body["access_token"], body["refresh_token"], body["instance_url"])


async def _refresh(emu: Emulator, http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    app = emu.apps[0]
    return await http.post(
        emu.login_url + TOKEN,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": app.client_id,
            "client_secret": app.client_secret,
        },
    )


async def _query(
    http: httpx.AsyncClient, base_url: str, token: str, soql: str = "SELECT Id FROM Account"
) -> httpx.Response:
    return await http.get(
        f"{base_url}{API}/query", params={"q": soql}, headers={"Authorization": f"Bearer {token}"}
    )


def _assert_error(response: httpx.Response, status: int, body: Any) -> None:
    """Exact status and JSON body (key order inside an error object does not matter)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == body


def _assert_invalid_grant(response: httpx.Response, answer: dict[str, str] = INVALID_GRANT) -> None:
    _assert_error(response, 400, answer)
    assert response.headers["cache-control"] == "no-store"


def _token_body(response: httpx.Response) -> dict[str, Any]:
    """A successful token response, checked for Salesforce's shape."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "expires_in" not in body
    assert isinstance(body["issued_at"], str)
    assert body["issued_at"].isdigit()
    return body


# -- cause 1: expired ---------------------------------------------------------------------


async def test_expired_session_answers_401_and_a_refresh_brings_it_back(emu: Emulator) -> None:
    org = emu.orgs[0]
    async with _client() as http:
        grant = await _connect(emu, http)
        assert (await _query(http, grant.instance_url, grant.access_token)).status_code == 200

        emu.admin.advance_clock(org.session_timeout_seconds + 1)
        expired = await _query(http, grant.instance_url, grant.access_token)
        _assert_error(expired, 401, EXPIRED_OR_INVALID)

        body = _token_body(await _refresh(emu, http, grant.refresh_token))
        # Without rotation no new refresh token comes back.
        assert "refresh_token" not in body
        assert body["instance_url"] == grant.instance_url
        assert body["access_token"] != grant.access_token
        assert body["access_token"].startswith(org.org_id[:15] + "!")
        assert (await _query(http, grant.instance_url, body["access_token"])).status_code == 200
        # The expired token stays dead.
        _assert_error(
            await _query(http, grant.instance_url, grant.access_token), 401, EXPIRED_OR_INVALID
        )

    rejected = emu.admin.requests(path=API + "/query")
    assert [(r["status"], r["errorCode"]) for r in rejected] == [
        (200, None),
        (401, "INVALID_SESSION_ID"),
        (200, None),
        (401, "INVALID_SESSION_ID"),
    ]


# -- cause 2: wrong instance --------------------------------------------------------------


async def test_wrong_instance_other_orgs_host_login_host_and_a_moved_org(emu: Emulator) -> None:
    org_a, org_b = emu.orgs
    async with _client() as http:
        grant = await _connect(emu, http)
        assert grant.instance_url == org_a.instance_url

        # Org A's token on org B's instance host.
        _assert_error(
            await _query(http, org_b.instance_url, grant.access_token), 401, EXPIRED_OR_INVALID
        )
        # A data call on the login host: the client never switched to instance_url.
        _assert_error(await _query(http, emu.login_url, grant.access_token), 400, URL_NOT_RESET)
        # Neither revoked anything: the token still works on its own instance.
        assert (await _query(http, org_a.instance_url, grant.access_token)).status_code == 200

        # The org moves to a new instance: the old host no longer knows it, and a refresh
        # returns the new instance_url, where the new token works.
        old_url = org_a.instance_url
        emu.admin.patch_org(org_a.org_id, {"instance_url": "new"})
        assert org_a.instance_url != old_url
        _assert_error(await _query(http, old_url, grant.access_token), 401, EXPIRED_OR_INVALID)
        body = _token_body(await _refresh(emu, http, grant.refresh_token))
        assert body["instance_url"] == org_a.instance_url
        assert (await _query(http, body["instance_url"], body["access_token"])).status_code == 200


# -- cause 3: IP lock ---------------------------------------------------------------------


def _loopback_aliases_work() -> bool:
    """Linux answers on all of 127.0.0.0/8; macOS only on 127.0.0.1 unless aliased."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.3", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(
    not _loopback_aliases_work(), reason="127.0.0.2/127.0.0.3 are not usable source addresses"
)
async def test_ip_lock_rejects_other_addresses_and_accepts_the_originating_one(
    emu: Emulator,
) -> None:
    org = emu.orgs[0]
    emu.admin.patch_org(org.org_id, {"lock_sessions_to_ip": True})
    async with _client("127.0.0.2") as from_2, _client("127.0.0.3") as from_3:
        grant = await _connect(emu, from_2)  # the token endpoint saw 127.0.0.2

        _assert_error(
            await _query(from_3, grant.instance_url, grant.access_token), 401, EXPIRED_OR_INVALID
        )
        assert (await _query(from_2, grant.instance_url, grant.access_token)).status_code == 200
        # Still rejected from .3: the failure does not depend on order or on expiry.
        _assert_error(
            await _query(from_3, grant.instance_url, grant.access_token), 401, EXPIRED_OR_INVALID
        )

        # A refresh from .3 yields a session locked to .3 (and no longer usable from .2).
        body = _token_body(await _refresh(emu, from_3, grant.refresh_token))
        assert (await _query(from_3, grant.instance_url, body["access_token"])).status_code == 200
        _assert_error(
            await _query(from_2, grant.instance_url, body["access_token"]), 401, EXPIRED_OR_INVALID
        )

    seen = [
        (r["client"], r["status"], r["errorCode"]) for r in emu.admin.requests(path=API + "/query")
    ]
    assert seen == [
        ("127.0.0.3", 401, "INVALID_SESSION_ID"),
        ("127.0.0.2", 200, None),
        ("127.0.0.3", 401, "INVALID_SESSION_ID"),
        ("127.0.0.3", 200, None),
        ("127.0.0.2", 401, "INVALID_SESSION_ID"),
    ]
    token_calls = emu.admin.requests(path=TOKEN)
    assert [(r["client"], r["grant_type"]) for r in token_calls] == [
        ("127.0.0.2", "authorization_code"),
        ("127.0.0.3", "refresh_token"),
    ]


# -- cause 4: API Client Control -----------------------------------------------------------


async def test_api_client_control_oauth_works_rest_refuses_refresh_does_not_help(
    emu: Emulator,
) -> None:
    org = emu.orgs[0]
    app = emu.apps[0]
    emu.admin.patch_org(org.org_id, {"api_client_control": True, "allowed_client_ids": []})
    async with _client() as http:
        grant = await _connect(emu, http)  # OAuth itself succeeds
        _assert_error(await _query(http, grant.instance_url, grant.access_token), 401, NOT_FOR_REST)

        body = _token_body(await _refresh(emu, http, grant.refresh_token))  # so does refresh
        _assert_error(
            await _query(http, grant.instance_url, body["access_token"]), 401, NOT_FOR_REST
        )

        # The admin allow-lists the app: the same session works at once.
        emu.admin.patch_org(org.org_id, {"allowed_client_ids": [app.client_id]})
        assert (await _query(http, grant.instance_url, body["access_token"])).status_code == 200

    assert len(emu.admin.requests(grant_type="refresh_token")) == 1


# -- cause 5: revoked ---------------------------------------------------------------------


async def _revoke_by_password_change(emu: Emulator, user: User, http: httpx.AsyncClient) -> None:
    emu.admin.set_password(user.username, "a-new-Passw0rd!")


async def _revoke_by_deactivation(emu: Emulator, user: User, http: httpx.AsyncClient) -> None:
    emu.admin.deactivate(user.username)


async def _revoke_app_for_the_user(emu: Emulator, user: User, http: httpx.AsyncClient) -> None:
    emu.admin.revoke_app(emu.apps[0].client_id, user.username)


async def _sixth_approval(emu: Emulator, user: User, http: httpx.AsyncClient) -> None:
    # Five more approvals of the same app by the same user: the first family is evicted.
    for _ in range(5):
        await _connect(emu, http, user)


@pytest.mark.parametrize(
    ("revoke", "answer"),
    [
        (_revoke_by_password_change, INVALID_GRANT),
        # Salesforce names the inactive user (the org's inactive_user_error, by default
        # inactive_user), so a client can tell a deactivation from a password change.
        (_revoke_by_deactivation, INACTIVE_USER),
        (_revoke_app_for_the_user, INVALID_GRANT),
        (_sixth_approval, INVALID_GRANT),
    ],
    ids=["password-change", "deactivation", "app-revoke", "sixth-approval"],
)
async def test_revoked_refresh_token_answers_invalid_grant(
    emu: Emulator, revoke: Any, answer: dict[str, str]
) -> None:
    org: Org = emu.orgs[0]
    user = org.users[0]
    async with _client() as http:
        grant = await _connect(emu, http, user)
        # A second user's grant is untouched by what happens to the first user.
        other = await _connect(emu, http, org.users[1])
        assert (await _query(http, grant.instance_url, grant.access_token)).status_code == 200

        await revoke(emu, user, http)

        _assert_invalid_grant(await _refresh(emu, http, grant.refresh_token), answer)
        _assert_error(
            await _query(http, grant.instance_url, grant.access_token), 401, EXPIRED_OR_INVALID
        )
        # Revoked for good: asking again does not revive it.
        _assert_invalid_grant(await _refresh(emu, http, grant.refresh_token), answer)
        _token_body(await _refresh(emu, http, other.refresh_token))

    statuses = [r["status"] for r in emu.admin.requests(grant_type="refresh_token")]
    assert statuses == [400, 400, 200]


async def test_sixth_approval_keeps_the_five_newest(emu: Emulator) -> None:
    user = emu.orgs[0].users[0]
    async with _client() as http:
        grants = [await _connect(emu, http, user) for _ in range(6)]
        _assert_invalid_grant(await _refresh(emu, http, grants[0].refresh_token))
        for grant in grants[1:]:
            _token_body(await _refresh(emu, http, grant.refresh_token))


# -- cause 6: maintenance (read-only) -----------------------------------------------------


async def test_maintenance_reads_pass_writes_fail(emu: Emulator) -> None:
    org = emu.orgs[0]
    async with _client() as http:
        grant = await _connect(emu, http)
        auth = {"Authorization": f"Bearer {grant.access_token}"}
        base = grant.instance_url + API
        created = await http.post(f"{base}/sobjects/Account", json={"Name": "Before"}, headers=auth)
        assert created.status_code == 201, created.text
        account_id = created.json()["id"]

        emu.admin.patch_org(org.org_id, {"read_only": True})

        # Reads pass.
        assert (await _query(http, grant.instance_url, grant.access_token)).status_code == 200
        read = await http.get(f"{base}/sobjects/Account/{account_id}", headers=auth)
        assert read.status_code == 200
        assert read.json()["Name"] == "Before"
        # Every kind of write fails with the maintenance error (default status 503).
        writes = [
            await http.post(f"{base}/sobjects/Account", json={"Name": "During"}, headers=auth),
            await http.patch(
                f"{base}/sobjects/Account/{account_id}", json={"Name": "During"}, headers=auth
            ),
            await http.delete(f"{base}/sobjects/Account/{account_id}", headers=auth),
        ]
        for write in writes:
            _assert_error(write, org.maintenance_status_code, MAINTENANCE)
        assert org.maintenance_status_code == 503

        # SALESFORCE.md marks the status UNCERTAIN: it is configurable per org.
        emu.admin.patch_org(org.org_id, {"maintenance_status_code": 400})
        _assert_error(
            await http.delete(f"{base}/sobjects/Account/{account_id}", headers=auth),
            400,
            MAINTENANCE,
        )
        # Nothing was written, and the session itself survived.
        after = await _query(
            http,
            grant.instance_url,
            grant.access_token,
            "SELECT Name FROM Account WHERE Name = 'During'",
        )
        assert after.json()["totalSize"] == 0

        emu.admin.patch_org(org.org_id, {"read_only": False})
        patched = await http.patch(
            f"{base}/sobjects/Account/{account_id}", json={"Name": "After"}, headers=auth
        )
        assert patched.status_code == 204

    failures = [r for r in emu.admin.requests() if r["errorCode"]]
    assert [(r["status"], r["errorCode"]) for r in failures] == [
        (503, "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"),
        (503, "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"),
        (503, "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"),
        (400, "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"),
    ]


async def test_maintenance_that_invalidates_sessions_leaves_refresh_tokens(
    emu: Emulator,
) -> None:
    org = emu.orgs[0]
    emu.admin.patch_org(org.org_id, {"invalidate_sessions_on_read_only": True})
    async with _client() as http:
        grant = await _connect(emu, http)
        emu.admin.patch_org(org.org_id, {"read_only": True})
        _assert_error(
            await _query(http, grant.instance_url, grant.access_token), 401, EXPIRED_OR_INVALID
        )
        body = _token_body(await _refresh(emu, http, grant.refresh_token))
        assert (await _query(http, grant.instance_url, body["access_token"])).status_code == 200


# -- refresh tokens: rotation, policies, the request log ----------------------------------


async def test_rotation_reuse_detection_revokes_the_whole_family(emu: Emulator) -> None:
    app = emu.apps[0]
    emu.admin.patch_app(app.client_id, {"rotate_refresh_tokens": True})
    async with _client() as http:
        grant = await _connect(emu, http)
        bystander = await _connect(emu, http, emu.orgs[0].users[1])

        first = _token_body(await _refresh(emu, http, grant.refresh_token))
        rotated = first["refresh_token"]
        assert rotated != grant.refresh_token
        second = _token_body(await _refresh(emu, http, rotated))
        current = second["refresh_token"]
        assert current not in (rotated, grant.refresh_token)
        assert (await _query(http, grant.instance_url, second["access_token"])).status_code == 200

        # Replaying a rotated-out token: refused, and it takes the whole family with it.
        _assert_invalid_grant(await _refresh(emu, http, grant.refresh_token))
        _assert_invalid_grant(await _refresh(emu, http, current))
        for token in (grant.access_token, first["access_token"], second["access_token"]):
            _assert_error(await _query(http, grant.instance_url, token), 401, EXPIRED_OR_INVALID)
        # Another family of the same app is not affected.
        assert (
            await _query(http, bystander.instance_url, bystander.access_token)
        ).status_code == 200
        assert "refresh_token" in _token_body(await _refresh(emu, http, bystander.refresh_token))


@pytest.mark.parametrize(
    ("policy", "steps"),
    [
        # (seconds to advance, refresh expected to work) per step.
        ("valid_until_revoked", [(86_400 * 365, True), (86_400 * 365, True)]),
        ("immediately", [(0, False)]),
        ("expire_after:3600", [(1800, True), (1700, True), (200, False)]),
        # Each use restarts the idle window: 3000 s, then 3000 s again, then 3700 s idle.
        ("expire_if_unused:3600", [(3000, True), (3000, True), (3700, False)]),
    ],
)
async def test_refresh_token_policy_expires_as_configured(
    emu: Emulator, policy: str, steps: list[tuple[int, bool]]
) -> None:
    emu.admin.patch_app(emu.apps[0].client_id, {"refresh_token_policy": policy})
    async with _client() as http:
        grant = await _connect(emu, http)
        for seconds, works in steps:
            emu.admin.advance_clock(seconds)
            response = await _refresh(emu, http, grant.refresh_token)
            if works:
                body = _token_body(response)
                assert (
                    await _query(http, grant.instance_url, body["access_token"])
                ).status_code == 200
            else:
                _assert_invalid_grant(response)
        # Once expired by policy it stays expired.
        if not steps[-1][1]:
            _assert_invalid_grant(await _refresh(emu, http, grant.refresh_token))

    expected = [200 if works else 400 for _, works in steps]
    if not steps[-1][1]:
        expected.append(400)
    assert [r["status"] for r in emu.admin.requests(grant_type="refresh_token")] == expected


async def test_request_log_counts_token_grants_exactly(emu: Emulator) -> None:
    org_a, org_b = emu.orgs
    app = emu.apps[0]
    async with _client() as http:
        grant_a = await _connect(emu, http)
        grant_b = await _connect(emu, http, org_b.users[0])
        for _ in range(3):
            _token_body(await _refresh(emu, http, grant_a.refresh_token))
        _token_body(await _refresh(emu, http, grant_b.refresh_token))
        _assert_invalid_grant(await _refresh(emu, http, "5Aep861not-a-token"))
        password = await http.post(
            emu.login_url + TOKEN,
            data={
                "grant_type": "password",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "username": org_a.users[1].username,
                "password": org_a.users[1].password,
            },
        )
        _token_body(password)
        for _ in range(4):
            assert (
                await _query(http, grant_a.instance_url, grant_a.access_token)
            ).status_code == 200

        # The HTTP admin API gives the same counts as the Python one.
        over_http = await http.get(
            emu.admin_url + "/requests", params={"grant_type": "refresh_token"}
        )
        assert over_http.status_code == 200
        assert len(over_http.json()["requests"]) == 5
        for_org_a = await http.get(
            emu.admin_url + "/requests",
            params={"grant_type": "refresh_token", "org_id": org_a.org_id},
        )
        assert len(for_org_a.json()["requests"]) == 3

    log = emu.admin.requests
    assert len(log(grant_type="authorization_code")) == 2
    assert [r["status"] for r in log(grant_type="refresh_token")] == [200, 200, 200, 200, 400]
    assert len(log(grant_type="refresh_token", org_id=org_a.org_id)) == 3
    assert len(log(grant_type="refresh_token", org_id=org_b.org_id)) == 1
    assert len(log(grant_type="password")) == 1
    assert len(log(path=TOKEN)) == 8
    data_calls = log(path="/services/data")
    assert len(data_calls) == 4
    assert all(r["grant_type"] is None for r in data_calls)
    # Admin calls are not part of the log.
    assert log(path="/_emulator") == []
