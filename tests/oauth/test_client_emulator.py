"""TokenEndpointClient against the Salesforce org emulator (real sockets on 127.0.0.1)."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tokenkeep.emulator import Emulator
from tokenkeep.lifecycle.expiry import estimate_expiry
from tokenkeep.oauth import (
    IntegrationConfigError,
    OAuthApp,
    OAuthError,
    TokenEndpointClient,
    TokenResponse,
    UpstreamTransportError,
    classify_refresh_failure,
    create_session,
    new_pkce_pair,
    new_state,
)
from tokenkeep.secret import Secret

TOKEN_PATH = "/services/oauth2/token"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with create_session(timeout_seconds=10) as s:
        yield s


@pytest.fixture
def client(salesforce_emulator: Emulator, session: aiohttp.ClientSession) -> TokenEndpointClient:
    # The gateway and the emulator share a clock here, so JWT exp lands in the emulator's window.
    return TokenEndpointClient(session, clock=salesforce_emulator.clock)


def oauth_app(emu: Emulator, **overrides: object) -> OAuthApp:
    app = emu.apps[0]
    fields: dict[str, object] = {
        "client_id": app.client_id,
        "client_secret": Secret(app.client_secret),
        "login_url": emu.login_url,
    }
    fields.update(overrides)
    return OAuthApp(**fields)  # type: ignore[arg-type]


async def connect(
    emu: Emulator, client: TokenEndpointClient, *, org: int = 0, user: int = 0
) -> tuple[OAuthApp, TokenResponse]:
    """Authorize headlessly (PKCE) and exchange the code; returns (app, TokenResponse)."""
    app = oauth_app(emu)
    pair = new_pkce_pair()
    redirect = emu.apps[0].redirect_uris[0]
    code = emu.admin.authorize(
        {
            "client_id": app.client_id,
            "username": emu.orgs[org].users[user].username,
            "redirect_uri": redirect,
            "code_challenge": pair.code_challenge,
            "scope": "api refresh_token",
        }
    )["code"]
    return app, await client.exchange_code(app, code, redirect, pair.code_verifier)


def token_calls(emu: Emulator, grant_type: str) -> int:
    return len(emu.admin.requests(grant_type=grant_type, path=TOKEN_PATH))


async def test_code_exchange_with_pkce(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    org, user = emu.orgs[0], emu.orgs[0].users[0]
    _, tr = await connect(emu, client)
    assert tr.signature_verified is True
    assert tr.org_id == org.org_id
    assert tr.user_id == user.user_id
    assert tr.instance_url == org.instance_url
    assert tr.refresh_token is not None
    assert tr.access_token.reveal().startswith(org.org_id[:15] + "!")
    assert tr.received_at <= emu.clock.time()
    assert tr.local_address == "127.0.0.1"
    assert token_calls(emu, "authorization_code") == 1


async def test_code_exchange_with_the_wrong_verifier_is_refused(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    app = oauth_app(emu)
    redirect = emu.apps[0].redirect_uris[0]
    code = emu.admin.authorize(
        {
            "client_id": app.client_id,
            "username": emu.orgs[0].users[0].username,
            "redirect_uri": redirect,
            "code_challenge": new_pkce_pair().code_challenge,
        }
    )["code"]
    with pytest.raises(OAuthError) as info:
        await client.exchange_code(app, code, redirect, new_pkce_pair().code_verifier)
    assert (info.value.status, info.value.error) == (400, "invalid_grant")
    assert info.value.error_description == "invalid code verifier"


async def test_authorize_url_drives_the_emulators_browser_flow(
    salesforce_emulator: Emulator, client: TokenEndpointClient, session: aiohttp.ClientSession
) -> None:
    emu = salesforce_emulator
    app = oauth_app(emu)
    user = emu.orgs[1].users[1]
    pair, state = new_pkce_pair(), new_state()
    redirect = emu.apps[0].redirect_uris[0]
    url = client.authorize_url(
        app, state=state, code_challenge=pair.code_challenge, redirect_uri=redirect
    )
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert url.startswith(emu.login_url + "/services/oauth2/authorize?")
    assert query["code_challenge_method"] == "S256"
    assert query["scope"] == "api refresh_token"
    async with session.get(url) as page:
        assert page.status == 200
        assert 'name="username"' in await page.text()
    login = {**query, "action": "login", "username": user.username, "password": user.password}
    async with session.post(emu.login_url + parts.path, data=login) as page:
        html = await page.text()
    ticket = re.search(r'name="ticket" value="([^"]+)"', html)
    assert ticket is not None
    approve = {**query, "action": "approve", "ticket": ticket.group(1), "decision": "allow"}
    async with session.post(
        emu.login_url + parts.path, data=approve, allow_redirects=False
    ) as done:
        assert done.status == 302
        back = parse_qs(urlsplit(done.headers["Location"]).query)
    assert back["state"] == [state]
    tr = await client.exchange_code(app, back["code"][0], redirect, pair.code_verifier)
    assert tr.user_id == user.user_id
    assert tr.org_id == emu.orgs[1].org_id


async def test_refresh_without_rotation_keeps_the_refresh_token(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    app, first = await connect(emu, client)
    again = await client.refresh(app, first.refresh_token)
    assert again.refresh_token is None
    assert again.access_token != first.access_token
    assert again.signature_verified is True
    # Still the same refresh token: it works a second time.
    third = await client.obtain(app, first.refresh_token)
    assert third.access_token != again.access_token
    assert token_calls(emu, "refresh_token") == 2


async def test_refresh_with_rotation_returns_a_new_refresh_token_and_replay_kills_the_family(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    emu.admin.patch_app(emu.apps[0].client_id, {"rotate_refresh_tokens": True})
    app, first = await connect(emu, client)
    old = first.refresh_token
    rotated = await client.refresh(app, old)
    assert rotated.refresh_token is not None
    assert rotated.refresh_token != old
    newer = await client.refresh(app, rotated.refresh_token)
    assert newer.refresh_token is not None
    # Replaying the rotated-out token fails and revokes the current one too.
    with pytest.raises(OAuthError) as info:
        await client.refresh(app, old)
    assert info.value.error == "invalid_grant"
    with pytest.raises(OAuthError):
        await client.refresh(app, newer.refresh_token)


async def test_jwt_bearer(salesforce_emulator: Emulator, client: TokenEndpointClient) -> None:
    emu = salesforce_emulator
    org = emu.orgs[0]
    admin_user, plain_user = org.users[0], org.users[1]
    key = Secret(emu.apps[0].private_key_pem)
    app = oauth_app(emu, auth_mode="jwt_bearer", private_key=key, username=admin_user.username)
    tr = await client.jwt_bearer(app)
    assert tr.refresh_token is None
    assert tr.instance_url == org.instance_url
    assert tr.access_token.reveal().startswith(org.org_id[:15] + "!")
    # "Refresh" for JWT bearer means minting again.
    again = await client.obtain(app)
    assert again.access_token != tr.access_token
    not_approved = oauth_app(
        emu, auth_mode="jwt_bearer", private_key=key, username=plain_user.username
    )
    with pytest.raises(OAuthError) as info:
        await client.jwt_bearer(not_approved)
    assert info.value.error_description == "user hasn't approved this consumer"
    decision = classify_refresh_failure(
        info.value,
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=False,
        newer_connection_same_user_app=False,
        attempts=1,
        max_attempts=3,
    )
    assert decision.status == "action_required"


async def test_client_credentials_on_my_domain_vs_login_host(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    org = emu.orgs[1]
    on_domain = oauth_app(emu, auth_mode="client_credentials", login_url=org.my_domain_url)
    tr = await client.client_credentials(on_domain)
    assert tr.org_id == org.org_id
    assert tr.user_id == org.users[0].user_id  # the run-as user
    assert tr.refresh_token is None
    # The emulator's login host is not a My Domain: Salesforce's own refusal comes back.
    on_login = oauth_app(emu, auth_mode="client_credentials")
    with pytest.raises(OAuthError) as info:
        await client.client_credentials(on_login)
    assert info.value.error_description == "request not supported on this domain"
    # The real shared login host is refused before any request leaves.
    before = token_calls(emu, "client_credentials")
    shared = oauth_app(
        emu, auth_mode="client_credentials", login_url="https://login.salesforce.com"
    )
    with pytest.raises(IntegrationConfigError) as local:
        await client.client_credentials(shared)
    assert local.value.error == "invalid_configuration"
    assert token_calls(emu, "client_credentials") == before


async def test_introspect_gives_the_lifetime_as_a_duration(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    org = emu.orgs[0]
    emu.admin.patch_org(org.org_id, {"session_timeout_seconds": 1800})
    # The emulator's clock runs hours ahead of ours: only the duration may be used.
    emu.admin.advance_clock(5 * 3600)
    app, tr = await connect(emu, client)
    info = await client.introspect(app, tr.access_token)
    assert info is not None
    assert info.lifetime_seconds == 1800
    assert info.username == org.users[0].username
    ours = 1_000_000.0
    assert estimate_expiry(ours, info.lifetime_seconds, app.session_timeout_seconds) == ours + 1800
    refresh_info = await client.introspect(
        app,
        tr.refresh_token,
        token_type_hint="refresh_token",
    )
    assert refresh_info is not None
    assert refresh_info.token_type == "refresh_token"
    assert await client.introspect(app, Secret("junk")) is None
    emu.admin.advance_clock(1801)
    assert await client.introspect(app, tr.access_token) is None


async def test_identity(salesforce_emulator: Emulator, client: TokenEndpointClient) -> None:
    emu = salesforce_emulator
    org, user = emu.orgs[0], emu.orgs[0].users[0]
    _, tr = await connect(emu, client)
    ident = await client.identity(tr.id_url, tr.access_token)
    assert (ident.org_id, ident.user_id, ident.username) == (
        org.org_id,
        user.user_id,
        user.username,
    )
    assert ident.urls["rest"] == org.instance_url + "/services/data/v{version}/"
    info_doc = await client.userinfo(oauth_app(emu), tr.access_token)
    assert (info_doc.username, info_doc.org_id) == (user.username, org.org_id)
    with pytest.raises(OAuthError) as info:
        await client.identity(tr.id_url, Secret("00Dnope!notatoken"))
    assert (info.value.status, info.value.error) == (403, "Bad_OAuth_Token")


async def test_revoke(salesforce_emulator: Emulator, client: TokenEndpointClient) -> None:
    emu = salesforce_emulator
    app, tr = await connect(emu, client)
    await client.revoke(app, tr.refresh_token)
    with pytest.raises(OAuthError) as info:
        await client.refresh(app, tr.refresh_token)
    assert info.value.error == "invalid_grant"
    with pytest.raises(OAuthError) as bad:
        await client.revoke(app, Secret("nope"))
    assert bad.value.error == "invalid_token"


async def test_invalid_grant_after_password_change_means_needs_reauth(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    app, tr = await connect(emu, client, user=1)
    emu.admin.set_password(emu.orgs[0].users[1].username, "a-new-Passw0rd")
    with pytest.raises(OAuthError) as info:
        await client.refresh(app, tr.refresh_token)
    assert info.value.error == "invalid_grant"
    decision = classify_refresh_failure(
        info.value,
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=False,
        newer_connection_same_user_app=False,
        attempts=1,
        max_attempts=3,
    )
    assert (decision.status, decision.reason) == ("needs_reauth", "revoked")
    assert token_calls(emu, "refresh_token") == 1


async def test_token_endpoint_503_is_a_transport_error_then_recovery(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    app, tr = await connect(emu, client)
    emu.admin.add_fault({"target": "token", "kind": "error", "status": 503, "count": 3})
    for attempt in range(1, 4):
        with pytest.raises(UpstreamTransportError) as info:
            await client.refresh(app, tr.refresh_token)
        assert (info.value.kind, info.value.status) == ("http_status", 503)
        decision = classify_refresh_failure(
            info.value,
            refresh_token_changed=False,
            lease_expired_before=False,
            rotation_enabled=False,
            newer_connection_same_user_app=False,
            attempts=attempt,
            max_attempts=3,
            rng=random.Random(attempt),
        )
        assert decision.status != "needs_reauth"
    assert decision.status == "error"
    recovered = await client.refresh(app, tr.refresh_token)
    assert recovered.access_token is not None


async def test_dropped_connection_is_a_transport_error(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    app, tr = await connect(emu, client)
    emu.admin.add_fault({"target": "token", "kind": "drop", "count": 1})
    with pytest.raises(UpstreamTransportError) as info:
        await client.refresh(app, tr.refresh_token)
    assert info.value.kind == "connection"


async def test_slow_token_endpoint_times_out(salesforce_emulator: Emulator) -> None:
    emu = salesforce_emulator
    async with create_session() as session:
        fast = TokenEndpointClient(session, clock=emu.clock)
        app, tr = await connect(emu, fast)
        emu.admin.add_fault(
            {"target": "token", "kind": "latency", "latency_seconds": 1.5, "count": 1}
        )
        impatient = TokenEndpointClient(session, clock=emu.clock, timeout_seconds=0.2)
        with pytest.raises(UpstreamTransportError) as info:
            await impatient.refresh(app, tr.refresh_token)
        assert info.value.kind == "timeout"


async def test_egress_address_is_used_and_recorded(salesforce_emulator: Emulator) -> None:
    emu = salesforce_emulator
    async with create_session(egress_address="127.0.0.2") as session:
        client = TokenEndpointClient(session, clock=emu.clock)
        _, tr = await connect(emu, client)
    assert tr.local_address == "127.0.0.2"
    seen = emu.admin.requests(grant_type="authorization_code")
    assert [r["client"] for r in seen] == ["127.0.0.2"]


def verdict(error: OAuthError, *, newer: bool = False) -> tuple[str | None, str, str | None]:
    d = classify_refresh_failure(
        error,
        refresh_token_changed=False,
        lease_expired_before=False,
        rotation_enabled=False,
        newer_connection_same_user_app=newer,
        attempts=1,
        max_attempts=3,
    )
    return d.status, d.reason, d.sub_reason


async def test_deactivated_user_and_revoked_app_mean_needs_reauth(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    app, first = await connect(emu, client, org=1, user=0)
    _, second = await connect(emu, client, org=1, user=1)
    emu.admin.deactivate(emu.orgs[1].users[0].username)
    emu.admin.revoke_app(emu.apps[0].client_id, emu.orgs[1].users[1].username)
    for tr in (first, second):
        assert tr.refresh_token is not None
        with pytest.raises(OAuthError) as info:
            await client.refresh(app, tr.refresh_token)
        assert verdict(info.value)[:2] == ("needs_reauth", "revoked")


async def test_deactivation_and_password_change_get_different_sub_reasons(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    users = emu.orgs[0].users
    app, deactivated = await connect(emu, client, user=0)
    _, changed = await connect(emu, client, user=1)
    emu.admin.deactivate(users[0].username)
    emu.admin.set_password(users[1].username, "a-new-Passw0rd")
    verdicts = []
    for tr in (deactivated, changed):
        assert tr.refresh_token is not None
        with pytest.raises(OAuthError) as info:
            await client.refresh(app, tr.refresh_token)
        verdicts.append(verdict(info.value))
    assert verdicts == [
        ("needs_reauth", "revoked", "inactive_user"),
        ("needs_reauth", "revoked", "expired_or_revoked"),
    ]
    # The org's inactive_user_error switched to invalid_grant: the description still names
    # the inactive user.
    emu.admin.patch_org(emu.orgs[0].org_id, {"inactive_user_error": "invalid_grant"})
    with pytest.raises(OAuthError) as info:
        await client.refresh(app, deactivated.refresh_token)
    assert info.value.error == "invalid_grant"
    assert verdict(info.value) == ("needs_reauth", "revoked", "inactive_user")


async def test_sixth_approval_evicts_the_oldest_family(
    salesforce_emulator: Emulator, client: TokenEndpointClient
) -> None:
    emu = salesforce_emulator
    grants = [await connect(emu, client, user=1) for _ in range(6)]
    app, oldest = grants[0]
    assert oldest.refresh_token is not None
    with pytest.raises(OAuthError) as info:
        await client.refresh(app, oldest.refresh_token)
    # The lifecycle knows a newer connection of the same user+app exists.
    assert verdict(info.value, newer=True) == ("needs_reauth", "revoked", "token_cap_evicted")
    newest = grants[-1][1]
    assert newest.refresh_token is not None
    await client.refresh(app, newest.refresh_token)
