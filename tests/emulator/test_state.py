"""The state model without sockets: pruning dead sessions keeps answers unchanged."""

from __future__ import annotations

from tokenkeep.clock import ManualClock
from tokenkeep.emulator.state import EmulatorState, build_fixture


def _state() -> EmulatorState:
    return build_fixture(
        ManualClock(),
        1,
        seed=1,
        login_url="http://127.0.0.1:1",
        instance_urls=["http://127.0.0.1:2"],
    )


def test_dead_sessions_are_pruned_and_live_ones_kept() -> None:
    state = _state()
    state.PRUNE_THRESHOLD = 10  # type: ignore[misc]
    state._prune_at = 10
    app, user = state.apps[0], state.orgs[0].users[0]
    old = [state.issue(app, user, "api", "127.0.0.1", refresh=False)[0] for _ in range(5)]
    state.clock.advance(7201)  # type: ignore[attr-defined]
    fresh = [state.issue(app, user, "api", "127.0.0.1", refresh=False)[0] for _ in range(5)]
    assert all(state.live(at.token) is None for at in old)
    assert all(at.token not in state.access for at in old)
    assert all(state.live(at.token) is at for at in fresh)


def test_half_timeout_bump_rule() -> None:
    state = _state()
    app, user = state.apps[0], state.orgs[0].users[0]
    at, _ = state.issue(app, user, "api", "127.0.0.1", refresh=False)
    issued = at.last_active
    state.clock.advance(3599)  # type: ignore[attr-defined]
    assert state.session(at.token) is at
    assert at.last_active == issued  # less than half the 7200 s timeout: not bumped
    state.clock.advance(1)  # type: ignore[attr-defined]
    assert state.session(at.token) is at
    assert at.last_active == issued + 3600
