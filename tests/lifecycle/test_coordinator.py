"""RefreshCoordinator against the emulator, on SQLite and PostgreSQL (one process)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from lifecycle_support import Rig, connect
from sqlalchemy import select

from tokenkeep.errors import (
    ActionRequiredError,
    NeedsReauthError,
    NotFoundError,
    TransientUpstreamError,
)
from tokenkeep.store.models import OrgStateRow, OutboxRow


async def _works(rig: Rig, instance_url: str, token: str) -> bool:
    """Does the org accept this token right now? (a real data call)"""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(
            instance_url + "/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {token}"},
        )
    return r.status_code == 200


async def _events(rig: Rig, connection_id: str) -> list[str]:
    async with rig.store.db.read() as session:
        rows = await session.scalars(
            select(OutboxRow.event_type)
            .where(OutboxRow.connection_id == connection_id)
            .order_by(OutboxRow.id)
        )
        return list(rows)


async def test_a_live_token_is_served_without_any_refresh(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    conn = await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    token = await rig.coordinator.fresh_token("c1", min_ttl=600)
    assert token.version == conn.version == 1
    assert rig.refresh_grants() == 0
    assert await _works(rig, token.instance_url, token.access_token.reveal())


async def test_expired_token_one_refresh_for_200_concurrent_callers(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    rig.advance(7300)  # past the 2 h session timeout on both clocks
    tokens = await asyncio.gather(
        *(rig.coordinator.fresh_token("c1", min_ttl=60) for _ in range(200))
    )
    assert rig.refresh_grants() == 1
    assert len({t.access_token.reveal() for t in tokens}) == 1
    assert {t.version for t in tokens} == {2}
    assert await _works(rig, tokens[0].instance_url, tokens[0].access_token.reveal())
    stored = await rig.store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    assert stored.credentials.access_token == tokens[0].access_token
    assert stored.lease_owner is None  # the commit released the lease
    assert stored.issued_to_address == "127.0.0.1"  # the local address the token came to


async def test_expiry_comes_from_introspection_anchored_on_our_clock(rig: Rig) -> None:
    org = rig.emu.orgs[0]
    rig.emu.admin.patch_org(org.org_id, {"session_timeout_seconds": 1800})
    await connect(rig.store, rig.emu, rig.client, org.users[0], "c1", clock=rig.clock)
    rig.advance(7300)
    before = rig.clock.time()
    token = await rig.coordinator.fresh_token("c1")
    # The integration says 7200 s; the org really times out after 1800 s: introspection wins.
    assert token.expires_at is not None
    assert token.expires_at.timestamp() == pytest.approx(before + 1800, abs=1)
    stored = await rig.store.connections.get("c1")
    assert stored.expires_at == token.expires_at
    assert stored.next_refresh_at is not None
    assert stored.next_refresh_at < stored.expires_at
    assert len(rig.emu.admin.requests(path="/services/oauth2/introspect")) == 1


async def test_a_rejected_cached_token_with_a_newer_row_needs_no_refresh(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    other_process = rig.new_coordinator()
    old = await other_process.token_for("c1")  # cached at version 1
    await rig.coordinator.refresh("c1")  # "another process" refreshes: version 2
    assert rig.refresh_grants() == 1
    newer = await other_process.refresh_after_rejection("c1", rejected_version=old.version)
    assert newer.version == 2
    assert rig.refresh_grants() == 1  # re-read the row, took its token, no second refresh
    assert await _works(rig, newer.instance_url, newer.access_token.reveal())


async def test_a_new_instance_url_replaces_the_stored_one(rig: Rig) -> None:
    org = rig.emu.orgs[0]
    conn = await connect(rig.store, rig.emu, rig.client, org.users[0], "c1", clock=rig.clock)
    rig.emu.admin.patch_org(org.org_id, {"instance_url": "new"})
    token = await rig.coordinator.refresh("c1")
    assert token.instance_url == org.instance_url != conn.instance_url
    stored = await rig.store.connections.get("c1")
    assert stored.instance_url == org.instance_url
    assert await _events(rig, "c1") == ["connection.instance_moved"]
    assert await _works(rig, token.instance_url, token.access_token.reveal())


@pytest.mark.parametrize(
    ("revoke", "reason"),
    [
        ("password", "revoked:expired_or_revoked"),
        # A deactivated user's refresh answers inactive_user (as Salesforce names an
        # inactive user), so the reason tells it apart from a password change.
        ("deactivate", "revoked:inactive_user"),
        ("app_revoke", "revoked:expired_or_revoked"),
    ],
)
async def test_revocation_marks_needs_reauth_after_one_attempt(
    rig: Rig, revoke: str, reason: str
) -> None:
    org = rig.emu.orgs[0]
    user = org.users[1]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    if revoke == "password":
        rig.emu.admin.set_password(user.username, "N3w-password!")
    elif revoke == "deactivate":
        rig.emu.admin.deactivate(user.username)
    else:
        rig.emu.admin.revoke_app(rig.emu.app_config.client_id, user.username)
    rig.advance(7300)
    with pytest.raises(NeedsReauthError):
        await rig.coordinator.fresh_token("c1")
    stored = await rig.store.connections.get("c1")
    assert (stored.status, stored.status_reason) == ("needs_reauth", reason)
    assert await _events(rig, "c1") == ["connection.needs_reauth"]
    assert rig.refresh_grants() == 1
    # Known as needs_reauth: answered at once, no upstream call, from any process.
    for coordinator in (rig.coordinator, rig.new_coordinator()):
        with pytest.raises(NeedsReauthError):
            await coordinator.fresh_token("c1")
    assert rig.refresh_grants() == 1


async def test_the_sixth_approval_evicts_the_oldest_connection(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[1]
    for i in range(6):  # max 5 approvals per user and app: the sixth evicts c0
        await connect(rig.store, rig.emu, rig.client, user, f"c{i}", clock=rig.clock)
        rig.advance(1)
    rig.advance(7300)
    with pytest.raises(NeedsReauthError):
        await rig.coordinator.fresh_token("c0")
    stored = await rig.store.connections.get("c0")
    assert (stored.status, stored.status_reason) == ("needs_reauth", "revoked:token_cap_evicted")
    assert rig.refresh_grants() == 1
    newest = await rig.coordinator.fresh_token("c5")
    assert await _works(rig, newest.instance_url, newest.access_token.reveal())


async def test_503_three_times_then_recovery_is_error_then_active(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    rig.advance(7300)
    rig.emu.admin.add_fault({"target": "token", "kind": "error", "status": 503, "count": 3})
    statuses = []
    for _ in range(3):
        with pytest.raises(TransientUpstreamError):
            await rig.coordinator.fresh_token("c1")
        stored = await rig.store.connections.get("c1")
        statuses.append(stored.status)
        # A caller during the backoff gets a clear 503 without reaching the provider.
        calls = rig.refresh_grants()
        with pytest.raises(TransientUpstreamError):
            await rig.coordinator.fresh_token("c1")
        assert rig.refresh_grants() == calls
        assert stored.next_refresh_at is not None
        rig.clock.set(stored.next_refresh_at)
    assert statuses == ["active", "active", "error"]  # error after refresh_max_attempts=3
    token = await rig.coordinator.fresh_token("c1")
    stored = await rig.store.connections.get("c1")
    assert (stored.status, stored.refresh_attempts) == ("active", 0)
    assert await _events(rig, "c1") == ["connection.refresh_failed", "connection.recovered"]
    assert await _works(rig, token.instance_url, token.access_token.reveal())


async def test_needs_reauth_is_answered_without_an_upstream_call(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    await rig.store.connections.set_status("c1", "needs_reauth", reason="revoked")
    rig.advance(7300)
    with pytest.raises(NeedsReauthError):
        await rig.coordinator.refresh("c1")
    with pytest.raises(NeedsReauthError):
        await rig.coordinator.fresh_token("c1")
    assert rig.emu.admin.requests(path="/services/oauth2/token")[-1]["grant_type"] == (
        "authorization_code"
    )


async def test_a_rotation_lost_in_a_crash_is_reported_not_retried(rig: Rig) -> None:
    rig.emu.admin.patch_app(rig.emu.app_config.client_id, {"rotate_refresh_tokens": True})
    user = rig.emu.orgs[0].users[0]
    conn = await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    # A worker takes the lease, gets a rotated token, and dies before committing it.
    dead = await rig.store.leases.acquire("c1", "dead-worker", now=rig.clock.now(), seconds=30)
    assert dead.acquired
    stored = await rig.store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    assert stored.credentials.refresh_token is not None
    from tokenkeep.oauth.models import oauth_app_for

    app = oauth_app_for(await rig.store.integrations.get("sf", with_secrets=True))
    await rig.client.refresh(app, stored.credentials.refresh_token)  # result lost in the crash
    rig.advance(7300)  # its lease expires; the token too
    with pytest.raises(NeedsReauthError):
        await rig.coordinator.fresh_token("c1")
    after = await rig.store.connections.get("c1")
    assert (after.status, after.status_reason) == ("needs_reauth", "revoked:rotation_lost")
    assert after.version == conn.version
    assert rig.refresh_grants() == 2  # the dead worker's and exactly one of ours
    with pytest.raises(NeedsReauthError):
        await rig.coordinator.fresh_token("c1")
    assert rig.refresh_grants() == 2


async def test_an_early_session_death_shortens_the_org_estimate(rig: Rig) -> None:
    org = rig.emu.orgs[0]
    await connect(rig.store, rig.emu, rig.client, org.users[0], "c1", clock=rig.clock)
    rig.emu.admin.patch_org(org.org_id, {"session_timeout_seconds": 3600})
    rig.advance(3700)  # dead on the emulator; we predicted 7200 s
    token = await rig.coordinator.token_for("c1")
    assert not await _works(rig, token.instance_url, token.access_token.reveal())
    fresh = await rig.coordinator.refresh_after_rejection("c1", token.version)
    assert await _works(rig, fresh.instance_url, fresh.access_token.reveal())
    # Nothing is learned from the rejection alone: only once the new token has worked.
    assert await rig.coordinator.timeouts.read_learned_timeout(org.org_id) is None
    rejection = rig.coordinator.take_rejection("c1", token.version)
    assert rejection is not None
    assert await rig.coordinator.learn_expiry(rejection) == 3600
    async with rig.store.db.read() as session:
        state = await session.get(OrgStateRow, org.org_id)
    assert state is not None
    assert state.session_timeout_estimate_seconds == 3600


async def test_a_cached_token_is_revalidated_against_the_row_every_few_seconds(
    rig: Rig,
) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    proxy_process = rig.new_coordinator(revalidate_seconds=5)
    first = await proxy_process.token_for("c1")
    # Another process marks the connection revoked: within the window the cache answers
    # (no database read per call), after it one cheap read notices.
    await rig.store.connections.set_status("c1", "needs_reauth", reason="revoked")
    assert (await proxy_process.token_for("c1")).version == first.version
    rig.advance(6)
    with pytest.raises(NeedsReauthError):
        await proxy_process.token_for("c1")
    await rig.store.connections.delete("c1")
    await connect(rig.store, rig.emu, rig.client, user, "c2", clock=rig.clock)
    await proxy_process.token_for("c2")
    await rig.store.connections.delete("c2")
    rig.advance(6)
    with pytest.raises(NotFoundError):
        await proxy_process.token_for("c2")


async def test_a_refused_app_is_action_required_not_retried(rig: Rig) -> None:
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    # The connected app's secret was rotated on the provider side: the app is refused.
    await rig.store.integrations.put(
        "sf",
        client_id=rig.emu.app_config.client_id,
        client_secret="not-the-secret",
        login_url=rig.emu.login_url,
        scopes=["api", "refresh_token"],
    )
    rig.advance(7300)
    with pytest.raises(ActionRequiredError) as caught:
        await rig.coordinator.fresh_token("c1")
    assert caught.value.status_code == 424
    stored = await rig.store.connections.get("c1")
    assert stored.status == "action_required"
    assert stored.status_reason is not None
    assert stored.status_reason.startswith("misconfigured:")
    assert await _events(rig, "c1") == ["connection.action_required"]
    with pytest.raises(ActionRequiredError):
        await rig.new_coordinator().fresh_token("c1")
    assert rig.refresh_grants() == 1


async def test_without_rotation_a_dead_workers_lease_is_not_called_a_lost_rotation(
    rig: Rig,
) -> None:
    """Rotation is inferred per connection (its last refresh carried no new refresh token):
    a revoked token met after taking over an expired lease is a revocation, not a lost
    rotation."""
    user = rig.emu.orgs[0].users[0]
    await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    rig.advance(7300)
    await rig.coordinator.fresh_token("c1")  # one refresh: no rotated token came back
    dead = await rig.store.leases.acquire("c1", "dead-worker", now=rig.clock.now(), seconds=30)
    assert dead.acquired
    rig.emu.admin.revoke_app(rig.emu.app_config.client_id, user.username)
    rig.advance(7300)  # the dead worker's lease expires; the token too
    with pytest.raises(NeedsReauthError):
        await rig.coordinator.fresh_token("c1")
    after = await rig.store.connections.get("c1")
    assert after.status == "needs_reauth"
    assert after.status_reason == "revoked:expired_or_revoked"


async def test_forced_refreshes_racing_plain_reads_all_get_a_newer_token(rig: Rig) -> None:
    """8 lanes of forced refreshes (``POST /connections/{id}/refresh``) beside 8 lanes of
    plain ``fresh_token`` reads that keep missing the cache, on one connection in one
    coordinator: every forced refresh answers a token newer than the one stored when it
    was asked. (A flight that had landed but whose clean-up callback had not yet run was
    joined again and again, returning at once each time, until the caller gave up with
    "could not get a fresh token": 7 of 120 forced refreshes here.)"""
    await connect(rig.store, rig.emu, rig.client, rig.emu.orgs[0].users[0], "c1", clock=rig.clock)
    failures: list[BaseException] = []
    stale: list[tuple[int, int]] = []

    async def forced() -> None:
        for _ in range(15):
            before = (await rig.store.connections.get("c1")).version
            try:
                token = await rig.coordinator.refresh("c1")
            except TransientUpstreamError as error:
                failures.append(error)
            else:
                if token.version <= before:
                    stale.append((before, token.version))

    async def plain() -> None:
        for _ in range(60):
            rig.coordinator.cache.forget("c1")  # a cache miss: a flight that only reads
            await rig.coordinator.fresh_token("c1", min_ttl=60)
            await asyncio.sleep(0)

    await asyncio.gather(*(forced() for _ in range(8)), *(plain() for _ in range(8)))
    assert failures == []
    assert stale == []
    stored = await rig.store.connections.get("c1")
    assert stored.status == "active"
    assert 2 <= stored.version <= 1 + 8 * 15
