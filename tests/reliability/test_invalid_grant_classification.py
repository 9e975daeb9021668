"""``invalid_grant`` classification: race vs revocation vs transient vs "token request is
already being processed" (Salesforce's answer while another refresh of the same refresh
token is in flight), as a table over the classifier and as live runs against the emulator
(SQLite and PostgreSQL, the emulator on the test's manual clock).

Only a confirmed refusal of the current refresh token may end ``needs_reauth``; a race is
recovered by re-reading the store; a transient fault and the concurrent-refresh answer
keep the connection and are retried after a pause.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from tests.lifecycle.lifecycle_support import (
    Rig,
    connect,
    register_integration,
    settings_for,
    token_client,
)

from tokenkeep.clock import ManualClock, utc_from_timestamp
from tokenkeep.emulator import Emulator
from tokenkeep.errors import NeedsReauthError, TransientUpstreamError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.oauth.classify import (
    IN_PROGRESS_PAUSE,
    RefreshFailureDecision,
    classify_refresh_failure,
)
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.store import Store

IN_FLIGHT = "token request is already being processed"


def _grant(description: str) -> OAuthError:
    return OAuthError(status=400, error="invalid_grant", error_description=description)


def _classify(
    error: OAuthError | UpstreamTransportError,
    *,
    changed: bool = False,
    lease_expired: bool = False,
    rotation: bool = False,
    newer: bool = False,
    attempts: int = 1,
) -> RefreshFailureDecision:
    return classify_refresh_failure(
        error,
        refresh_token_changed=changed,
        lease_expired_before=lease_expired,
        rotation_enabled=rotation,
        newer_connection_same_user_app=newer,
        attempts=attempts,
        max_attempts=3,
        rng=random.Random(attempts),
    )


# id, error, refresh token changed under us, action, status, stored reason
TABLE = [
    ("race", _grant("expired access/refresh token"), True, "use_newer_token", None, "race"),
    ("race-beats-in-flight", _grant(IN_FLIGHT), True, "use_newer_token", None, "race"),
    ("revocation", _grant("expired access/refresh token"), False,
     "needs_reauth", "needs_reauth", "revoked"),
    ("revocation-inactive-user", _grant("inactive user"), False,
     "needs_reauth", "needs_reauth", "revoked"),
    ("transient-timeout", UpstreamTransportError("t", kind="timeout"), False,
     "retry", None, "transient"),
    ("transient-5xx", UpstreamTransportError("s", kind="http_status", status=503), False,
     "retry", None, "transient"),
    ("in-flight", _grant(IN_FLIGHT), False, "retry", None, "transient"),
    ("in-flight-case-and-punctuation", _grant("Token request is already being processed."),
     False, "retry", None, "transient"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "changed", "action", "status", "reason"),
    [pytest.param(*row[1:], id=row[0]) for row in TABLE],
)
def test_the_classifier_tells_the_four_apart(
    error: OAuthError | UpstreamTransportError,
    changed: bool,
    action: str,
    status: str | None,
    reason: str,
) -> None:
    for rotation in (False, True):
        for lease_expired in (False, True):
            decision = _classify(
                error, changed=changed, lease_expired=lease_expired, rotation=rotation
            )
            assert (decision.action, decision.status, decision.reason) == (action, status, reason)


@pytest.mark.parametrize("attempts", [1, 2, 3, 10])
def test_already_being_processed_is_never_a_revocation_and_pauses(attempts: int) -> None:
    decision = _classify(
        _grant(IN_FLIGHT), lease_expired=True, rotation=True, newer=True, attempts=attempts
    )
    assert decision.status in (None, "error")  # never needs_reauth, even with every hint
    assert decision.sub_reason == "refresh_in_progress"
    assert decision.retry_after is not None
    assert decision.retry_after >= IN_PROGRESS_PAUSE


# -- live runs ----------------------------------------------------------------------------


@pytest.fixture
async def live(store: Store, clock: ManualClock, db_url: str) -> AsyncIterator[Rig]:
    """The emulator (rotation on) and a coordinator on the same manual clock; ``c1`` stored
    and its session expired upstream and here."""
    async with Emulator.running(orgs=1, clock=clock) as emu, token_client(clock) as client:
        emu.admin.patch_app(emu.app_config.client_id, {"rotate_refresh_tokens": True})
        await register_integration(store, emu)
        settings = settings_for(db_url)
        await connect(store, emu, client, emu.orgs[0].users[0], "c1", clock=clock)
        clock.advance(7300)
        yield Rig(
            store=store,
            emu=emu,
            client=client,
            coordinator=RefreshCoordinator(store, client, settings=settings, clock=clock),
            settings=settings,
            clock=clock,
        )


async def test_live_a_revocation_ends_needs_reauth_with_its_reason(live: Rig) -> None:
    user = live.emu.orgs[0].users[0]
    live.emu.admin.revoke_app(live.emu.app_config.client_id, user.username)
    with pytest.raises(NeedsReauthError) as caught:
        await live.coordinator.fresh_token("c1")
    stored = await live.store.connections.get("c1")
    assert (stored.status, stored.status_reason) == ("needs_reauth", "revoked:expired_or_revoked")
    assert str(caught.value.reason) == "revoked:expired_or_revoked"
    assert live.refresh_grants() == 1


async def test_live_a_deactivated_user_is_reported_as_such(live: Rig) -> None:
    live.emu.admin.deactivate(live.emu.orgs[0].users[0].username)
    with pytest.raises(NeedsReauthError):
        await live.coordinator.fresh_token("c1")
    stored = await live.store.connections.get("c1")
    assert stored.status == "needs_reauth"
    assert stored.status_reason is not None
    assert stored.status_reason.startswith("revoked:")


async def test_live_a_race_is_recovered_from_the_store(live: Rig) -> None:
    """While our refresh call is held by the provider, the user re-connects (a newer token is
    stored by another writer) and the old grant is revoked: our call answers invalid_grant;
    the re-read sees the newer token and serves it. No needs_reauth."""
    emu, user = live.emu, live.emu.orgs[0].users[0]
    emu.admin.add_fault({"target": "token", "kind": "latency", "latency_seconds": 1.0, "count": 1})
    flight = asyncio.create_task(live.coordinator.fresh_token("c1"))
    for _ in range(200):  # until the provider holds our call (bounded: 2 s)
        if emu.admin.faults.public() == []:
            break
        await asyncio.sleep(0.01)
    emu.admin.revoke_app(emu.app_config.client_id, user.username)
    await connect(live.store, emu, live.client, user, "other", clock=live.clock)
    newer = await live.store.connections.get("other", with_credentials=True)
    assert newer.credentials is not None
    old = await live.store.connections.get("c1")
    assert await live.store.connections.update_credentials(
        "c1",
        old.version,
        access_token=newer.credentials.access_token,
        refresh_token=newer.credentials.refresh_token,
        expires_at=live.clock.now() + timedelta(hours=2),
    )
    token = await asyncio.wait_for(flight, timeout=20)
    assert token.access_token.fingerprint == newer.credentials.access_token.fingerprint
    stored = await live.store.connections.get("c1")
    assert (stored.status, stored.version) == ("active", old.version + 1)
    denied = [r for r in emu.admin.requests(grant_type="refresh_token") if r["status"] == 400]
    assert len(denied) == 1  # our call was refused, and classified as the race it was


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "error", "status": 503},
        {"kind": "drop"},
        {"kind": "oauth_error", "error": "invalid_grant", "error_description": IN_FLIGHT},
    ],
    ids=["5xx", "dropped", "already-being-processed"],
)
async def test_live_a_transient_answer_keeps_the_connection_and_is_retried(
    live: Rig, fault: dict[str, object]
) -> None:
    live.emu.admin.add_fault({"target": "token", "count": 1, **fault})
    with pytest.raises(TransientUpstreamError) as caught:
        await live.coordinator.fresh_token("c1")
    stored = await live.store.connections.get("c1")
    assert stored.status == "active"
    assert stored.refresh_attempts == 1
    retry_at = caught.value.retry_at
    assert retry_at is not None
    pause = retry_at - live.clock.time()
    if fault["kind"] == "oauth_error":
        assert pause >= IN_PROGRESS_PAUSE
    # Before the pause is over nobody calls the provider again.
    with pytest.raises(TransientUpstreamError):
        await live.coordinator.fresh_token("c1")
    assert live.refresh_grants() == 1
    live.clock.set(utc_from_timestamp(retry_at + 0.1))
    token = await live.coordinator.fresh_token("c1")
    stored = await live.store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    assert (stored.status, stored.refresh_attempts) == ("active", 0)
    assert token.access_token.fingerprint == stored.credentials.access_token.fingerprint
    answers = [r["status"] for r in live.emu.admin.requests(grant_type="refresh_token")]
    assert answers[-1] == 200
    assert len(answers) == 2
