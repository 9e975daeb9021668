"""The six causes told apart end to end: a real gateway, its proxy and the emulator.

Each test sets a cause up in the emulator as an org admin (or Salesforce) would, calls
through the proxy as an app would, and checks what a user checks: the status code, the
``Tokenkeep-Cause`` header, the connection's status and reason, the upstream calls the
emulator saw, the learned session timeout, the webhook events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokenkeep.clock import OffsetClock
from tokenkeep.harness import GatewayUnderTest, running_gateway

# The proxy's behaviour holds for each upstream client (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("upstream_client")

QUERY = "/services/data/v60.0/query?q=SELECT+Id+FROM+Account"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    async with running_gateway(tmp_path / "tk", orgs=2, clock=OffsetClock()) as gw:
        yield gw


def _auth(gw: GatewayUnderTest) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.api_key.reveal()}"}


async def _get(gw: GatewayUnderTest, connection_id: str, path: str = QUERY) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw), timeout=30) as http:
        return await http.get(f"/c/{connection_id}{path}")


async def _api(gw: GatewayUnderTest, method: str, path: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw), timeout=30) as http:
        return await http.request(method, path, **kw)


def _data_calls(gw: GatewayUnderTest, org_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in gw.emulator.admin.requests(org_id=org_id)
        if r["path"].startswith("/services/data/v")
    ]


async def _events(gw: GatewayUnderTest, event_type: str) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from tokenkeep.store.models import OutboxRow

    async with gw.gateway.store.db.read() as session:
        rows = (
            await session.execute(select(OutboxRow).where(OutboxRow.event_type == event_type))
        ).scalars()
        return [dict(r.payload) for r in rows]


async def _learned(gw: GatewayUnderTest, org_id: str) -> float | None:
    return await gw.gateway.store.orgs.learned_timeout(org_id)


async def test_expired_is_named_recovered_logged_and_learned(gw: GatewayUnderTest) -> None:
    """Defect: ``expired`` was never named (header, /logs, process log)."""
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    # The org's timeout is 1 h, not the 2 h we assume: the session dies before we refresh.
    gw.emulator.admin.patch_org(org.org_id, {"session_timeout_seconds": 3600})
    gw.emulator.admin.advance_clock(3700)
    answer = await _get(gw, "c1")
    assert answer.status_code == 200
    assert answer.headers["Tokenkeep-Cause"] == "expired"
    assert gw.grants() == 1
    logs = (await _api(gw, "GET", "/logs", params={"connection_id": "c1"})).json()
    rows = logs["data"] if isinstance(logs, dict) else logs
    diagnosis = [r for r in rows if r["kind"] == "diagnosis"]
    assert diagnosis
    assert diagnosis[0]["cause"] == "expired"
    assert diagnosis[0]["outcome"] == "recovered"
    assert await _learned(gw, org.org_id) == 3600


async def test_an_instance_move_is_fixed_by_one_refresh_and_not_learned(
    gw: GatewayUnderTest,
) -> None:
    """Defect: every recovery was learned as an early expiry (down to 60 s)."""
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    gw.emulator.admin.advance_clock(1900)  # a plausible age: 30 minutes would fit
    gw.emulator.admin.patch_org(org.org_id, {"instance_url": "new"})
    answer = await _get(gw, "c1")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Tokenkeep-Cause"] == "wrong_instance"
    stored = await gw.gateway.store.connections.get("c1")
    assert stored.instance_url == gw.emulator.orgs[0].instance_url
    assert stored.status == "active"
    assert await _learned(gw, org.org_id) is None
    moved = await _events(gw, "connection.instance_moved")
    assert [e["connection_id"] for e in moved] == ["c1"]
    # The next calls go to the new host at once: no refresh, no failure.
    again = await _get(gw, "c1")
    assert again.status_code == 200
    assert "Tokenkeep-Cause" not in again.headers
    assert gw.grants() == 1


async def test_a_killed_session_minutes_old_teaches_nothing(gw: GatewayUnderTest) -> None:
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    assert (await _get(gw, "c1")).status_code == 200
    gw.emulator.admin.advance_clock(40)
    user = gw.emulator.orgs[0].users[0]
    gw.emulator.admin.kill_sessions(username=user.username)  # Setup > Session Management
    answer = await _get(gw, "c1")
    assert answer.status_code == 200
    assert answer.headers["Tokenkeep-Cause"] == "expired"
    assert await _learned(gw, org.org_id) is None  # 40 s is no session timeout


async def test_url_not_reset_is_fixed_by_a_refresh(gw: GatewayUnderTest) -> None:
    """Defect: an import with the login host as instance_url failed forever."""
    emu = gw.emulator
    await gw.connect("c1", via="import", instance_url=emu.login_url)  # the mistake
    assert (await gw.gateway.store.connections.get("c1")).instance_url == emu.login_url
    answer = await _get(gw, "c1")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Tokenkeep-Cause"] == "wrong_instance"
    stored = await gw.gateway.store.connections.get("c1")
    assert stored.instance_url == emu.orgs[0].instance_url
    assert gw.grants() == 1
    assert (await _get(gw, "c1")).status_code == 200
    assert gw.grants() == 1


async def test_api_client_control_needs_an_admin_and_stops_calling_salesforce(
    gw: GatewayUnderTest,
) -> None:
    """Defect: labelled unknown, the connection stayed active, every call went upstream."""
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    gw.emulator.admin.patch_org(org.org_id, {"api_client_control": True})
    answer = await _get(gw, "c1")
    assert answer.status_code == 401
    assert answer.headers["Tokenkeep-Cause"] == "api_client_control"
    stored = await gw.gateway.store.connections.get("c1")
    assert stored.status == "action_required"
    assert (stored.status_reason or "").startswith("api_client_control")
    events = await _events(gw, "connection.action_required")
    assert [e["cause"] for e in events] == ["api_client_control"]
    assert "pre-authorized" in events[0]["fix"]
    before = len(_data_calls(gw, org.org_id))
    refused = await _get(gw, "c1")
    assert refused.status_code == 424
    assert refused.headers["Tokenkeep-Cause"] == "api_client_control"
    assert len(_data_calls(gw, org.org_id)) == before  # no upstream call
    # The admin allows the app; a diagnosis sees it work and clears the status.
    gw.emulator.admin.patch_org(org.org_id, {"allowed_client_ids": [gw.emulator.apps[0].client_id]})
    doc = (await _api(gw, "POST", "/connections/c1/diagnose")).json()
    assert doc["cause"] is None
    assert doc["recovered"] is True
    assert doc["status"] == "active"
    assert (await _get(gw, "c1")).status_code == 200


async def test_a_503_on_the_reactive_refresh_is_our_503_and_the_refused_token_stays_home(
    gw: GatewayUnderTest, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defect: Salesforce's 401 relayed with cause unknown; every later call resent the
    refused token upstream; GET /token handed it out with 200."""
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    gw.emulator.admin.patch_org(org.org_id, {"session_timeout_seconds": 3600})
    gw.emulator.admin.advance_clock(3700)  # dead upstream, alive by our estimate
    gw.emulator.admin.add_fault({"target": "token", "kind": "error", "status": 503})
    answer = await _get(gw, "c1")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "upstream_unavailable"
    assert int(answer.headers["Retry-After"]) >= 1
    # The process log says why, readably (it used to print code="***").
    assert "error_code=upstream_unavailable" in capsys.readouterr().out
    stored = await gw.gateway.store.connections.get("c1")
    assert stored.status != "needs_reauth"  # an outage is never a revocation
    refused = len([c for c in _data_calls(gw, org.org_id) if c["status"] == 401])
    assert refused == 1
    again = await _get(gw, "c1")
    assert again.status_code == 503
    assert len([c for c in _data_calls(gw, org.org_id) if c["status"] == 401]) == 1
    token = await _api(gw, "GET", "/connections/c1/token")
    assert token.status_code == 503
    # The outage ends: the next call after the backoff refreshes and works.
    gw.emulator.admin.clear_faults()
    gw.emulator.admin.advance_clock(3600)
    assert (await _get(gw, "c1")).status_code == 200


async def test_diagnose_names_a_revocation_with_its_fix(gw: GatewayUnderTest) -> None:
    user = gw.emulator.orgs[0].users[0]
    await gw.connect("c1")
    healthy = (await _api(gw, "POST", "/connections/c1/diagnose")).json()
    assert healthy["cause"] is None
    assert healthy["status"] == "active"
    gw.emulator.admin.set_password(user.username, "N3w-passw0rd!")
    doc = (await _api(gw, "POST", "/connections/c1/diagnose")).json()
    assert doc["cause"] == "revoked"
    assert doc["confidence"] == "high"
    assert doc["status"] == "needs_reauth"
    assert "connect link" in doc["fix"]
    assert any(e["name"] == "answer" for e in doc["evidence"])
    assert (await _api(gw, "POST", "/connections/nope/diagnose")).status_code == 404


async def test_report_names_an_ip_lock_for_a_direct_mode_client_elsewhere(
    gw: GatewayUnderTest,
) -> None:
    """Defect: issued_to_address was stored and never used. A worker on 127.0.0.3 uses a
    token the gateway obtained from 127.0.0.1 on a locked org."""
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    gw.emulator.admin.patch_org(org.org_id, {"lock_sessions_to_ip": True})
    token = (await _api(gw, "GET", "/connections/c1/token")).json()
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
    async with httpx.AsyncClient(transport=transport) as worker:
        failed = await worker.get(
            token["instance_url"] + QUERY,
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
    assert failed.status_code == 401
    doc = (
        await _api(
            gw,
            "POST",
            "/connections/c1/report",
            json={
                "status": failed.status_code,
                "body": failed.text,
                "host": token["instance_url"],
                "address": "127.0.0.3",
                "version": token["version"],
            },
        )
    ).json()
    assert doc["cause"] == "ip_locked", doc
    assert doc["confidence"] == "high"
    assert doc["status"] == "action_required"
    says = " ".join(e["says"] for e in doc["evidence"])
    assert "127.0.0.3" in says
    assert "127.0.0.1" in says
    assert "Lock sessions to the IP address" in doc["fix"]
    assert gw.grants() == 0  # proven without a single refresh
    assert (await _api(gw, "GET", "/connections/c1/token")).status_code == 424


async def test_report_rejects_bad_input_with_a_clear_error(gw: GatewayUnderTest) -> None:
    await gw.connect("c1")
    bad = await _api(gw, "POST", "/connections/c1/report", json={"status": "x"})
    assert bad.status_code == 422
    assert "error" in bad.json()
    extra = await _api(gw, "POST", "/connections/c1/report", json={"status": 401, "t": 1})
    assert extra.status_code == 422


@contextlib.asynccontextmanager
async def _second_gateway(
    a: GatewayUnderTest, egress_address: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """Another gateway process on A's database and keys (in this process, over ASGI)."""
    from tokenkeep.runtime import Gateway
    from tokenkeep.server import build_asgi_app

    b = Gateway(
        a.gateway.settings.model_copy(update={"egress_address": egress_address}),
        clock=a.clock,
    )
    app = build_asgi_app(b)
    await b.start()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://127.0.0.1",
            headers=_auth(a),
            timeout=30,
        ) as via_b:
            yield via_b
    finally:
        await b.stop()


async def test_two_gateways_racing_a_rotating_token_is_not_a_revocation(
    gw: GatewayUnderTest,
) -> None:
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    gw.emulator.admin.patch_app(gw.emulator.apps[0].client_id, {"rotate_refresh_tokens": True})
    gw.emulator.admin.patch_org(org.org_id, {"session_timeout_seconds": 1800})
    gw.emulator.admin.advance_clock(1900)
    async with _second_gateway(gw) as via_b:
        answers = await asyncio.gather(
            *[_get(gw, "c1") for _ in range(5)], *[via_b.get(f"/c/c1{QUERY}") for _ in range(5)]
        )
    assert [a.status_code for a in answers] == [200] * 10
    # Calls that met the dead token say why; calls that came after the refresh had nothing to.
    assert {a.headers.get("Tokenkeep-Cause") for a in answers} <= {"expired", None}
    assert any(a.headers.get("Tokenkeep-Cause") == "expired" for a in answers)
    stored = await gw.gateway.store.connections.get("c1")
    assert stored.status == "active"
    assert gw.grants() == 1


async def test_two_gateways_on_a_locked_org_stop_ping_ponging(tmp_path: Path) -> None:
    """Defect: two gateway hosts with different egress addresses on an IP-locked org
    silently refreshed in turns (5 refreshes for 7 reads). Now the second gateway proves
    the lock (the refused token is still active, it was obtained from the other address)
    and marks the connection action_required: one refresh, then 424 everywhere."""
    async with running_gateway(
        tmp_path / "a", clock=OffsetClock(), egress_address="127.0.0.2"
    ) as a:
        org = a.emulator.orgs[0]
        await a.connect("c1")
        stored = await a.gateway.store.connections.get("c1")
        assert stored.issued_to_address == "127.0.0.2"
        a.emulator.admin.patch_org(org.org_id, {"lock_sessions_to_ip": True})
        async with _second_gateway(a, "127.0.0.3") as via_b:
            first = await via_b.get(f"/c/c1{QUERY}")
            assert first.status_code == 200  # the call itself is recovered...
            assert first.headers["Tokenkeep-Cause"] == "ip_locked"  # ...and named
            stored = await a.gateway.store.connections.get("c1")
            assert stored.status == "action_required"
            assert (stored.status_reason or "").startswith("ip_locked")
            for _ in range(3):
                assert (await via_b.get(f"/c/c1{QUERY}")).status_code == 424
        for _ in range(3):
            answer = await _get(a, "c1")
            if answer.status_code == 424:
                break
            a.emulator.admin.advance_clock(6)  # A's cache re-reads the row within 5 s
        assert answer.status_code == 424
        assert answer.headers["Tokenkeep-Cause"] == "ip_locked"
        assert a.grants() == 1


async def test_a_maintenance_burst_over_50_connections_is_not_50_expiries(
    gw: GatewayUnderTest,
) -> None:
    """Look-alike: a maintenance session flip kills every session of an org at once, at an
    age that would fit a timeout. Nothing is marked needs_reauth and nothing is learned."""
    org = gw.emulator.orgs[0]
    users = len(org.users)
    ids = [f"m{i}" for i in range(50)]
    # Few emulator users, 50 grants: lift the 5-approval cap so none is evicted.
    gw.emulator.admin.patch_app(gw.emulator.apps[0].client_id, {"max_approvals": 100})
    for i, cid in enumerate(ids):
        await gw.connect(cid, user=i % users, via="import")
    gw.emulator.admin.advance_clock(1900)  # 30 minutes would "fit"
    gw.emulator.admin.patch_org(
        org.org_id, {"read_only": True, "invalidate_sessions_on_read_only": True}
    )
    answers = await asyncio.gather(*[_get(gw, cid) for cid in ids])
    assert [a.status_code for a in answers] == [200] * 50  # reads flow
    for cid in ids:
        assert (await gw.gateway.store.connections.get(cid)).status == "active"
    assert await _learned(gw, org.org_id) is None


async def test_maintenance_pauses_writes_names_the_cause_and_is_in_the_log(
    gw: GatewayUnderTest,
) -> None:
    """Defect: our 503 org_write_paused had no Tokenkeep-Cause; maintenance left no /logs rows."""
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    gw.emulator.admin.patch_org(org.org_id, {"read_only": True})
    path = "/c/c1/services/data/v60.0/sobjects/Account"
    first = await _api(gw, "POST", path, json={"Name": "During maintenance"})
    assert first.status_code >= 400
    assert first.headers["Tokenkeep-Cause"] == "maintenance"
    paused = await _api(gw, "POST", path, json={"Name": "Paused"})
    assert paused.status_code == 503
    assert paused.json()["error"]["code"] == "org_write_paused"
    assert paused.headers["Tokenkeep-Cause"] == "maintenance"
    assert int(paused.headers["Retry-After"]) >= 1
    assert (await _get(gw, "c1")).status_code == 200  # reads flow
    logs = (await _api(gw, "GET", "/logs", params={"kind": "write_pause_started"})).json()
    rows = logs["data"] if isinstance(logs, dict) else logs
    assert [(r["org_id"], r["cause"]) for r in rows] == [(org.org_id, "maintenance")]
    stored = await gw.gateway.store.connections.get("c1")
    assert stored.status == "active"
