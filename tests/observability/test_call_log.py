"""Every proxied call, refresh, import, connect and status change is a row in the operation
log: "what happened to org X at 14:02" is one ``GET /logs`` query.

Defect on the old main: ``/logs`` had refreshes and connects only — no proxied call, no
import, no status change — so an ``INVALID_SESSION_ID`` spike was not one query away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokenkeep.clock import OffsetClock
from tokenkeep.harness import GatewayUnderTest, running_gateway

QUERY = "/services/data/v60.0/query?q=SELECT+Id+FROM+Account"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    async with running_gateway(tmp_path / "tk", orgs=2, clock=OffsetClock()) as gw:
        yield gw


async def _http(gw: GatewayUnderTest, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30) as http:
        return await http.request(method, path, **kw)


async def _logs(gw: GatewayUnderTest, *, expect: int = 0, **params: Any) -> list[dict[str, Any]]:
    """The matching entries; with ``expect``, wait (bounded) until that many are there: a
    call's entry is queued right after its response is sent, so the client can be first."""
    for _ in range(100):
        answer = await _http(gw, "GET", "/logs", params=params)
        assert answer.status_code == 200, answer.text
        rows = list(answer.json()["data"])
        if len(rows) >= expect:
            return rows
        await asyncio.sleep(0.02)
    return rows


async def test_a_proxied_call_is_one_row_with_what_a_user_asks(gw: GatewayUnderTest) -> None:
    conn = await gw.connect("c1")
    answer = await _http(gw, "GET", f"/c/c1{QUERY}")
    assert answer.status_code == 200
    bad = await _http(gw, "GET", "/c/c1/services/data/v60.0/query?q=SELEC+nonsense")
    assert bad.status_code == 400

    calls = await _logs(gw, kind="call", connection_id="c1", expect=2)
    assert len(calls) == 2
    malformed, ok = calls  # newest first
    assert ok["status_code"] == 200
    assert ok["outcome"] == "ok"
    assert ok["org_id"] == conn.org_id
    assert ok["cause"] is None
    assert ok["duration_ms"] > 0
    detail = ok["detail"]
    assert detail["method"] == "GET"
    # No query string by default: a SOQL query can hold customer data.
    assert detail["path"] == "/services/data/v60.0/query"
    assert detail["user_id"] == conn.user_id
    assert detail["integration"] == "emulator"
    assert detail["request_id"] == answer.headers["tokenkeep-request-id"]
    assert detail["answered_by"] == "salesforce"
    assert detail["retried"] is False
    assert malformed["status_code"] == 400
    assert malformed["outcome"] == "error"
    # Salesforce's errorCode, read from the answers the proxy reads (400, 401, 403, writes).
    assert malformed["detail"]["error_code"] == bad.json()[0]["errorCode"]
    assert await _logs(gw, status="4xx", kind="call") == [malformed]
    assert await _logs(gw, status="200", kind="call") == [ok]


async def test_an_expired_session_logs_the_call_the_refresh_and_no_token(
    gw: GatewayUnderTest,
) -> None:
    org = gw.emulator.orgs[0]
    conn = await gw.connect("c1")
    gw.emulator.admin.patch_org(org.org_id, {"session_timeout_seconds": 3600})
    gw.emulator.admin.advance_clock(3700)
    answer = await _http(gw, "GET", f"/c/c1{QUERY}")
    assert answer.status_code == 200
    assert answer.headers["Tokenkeep-Cause"] == "expired"

    rows = await _logs(gw, org_id=conn.org_id, kind="call", expect=1)
    rows = await _logs(gw, org_id=conn.org_id)
    call = next(r for r in rows if r["kind"] == "call")
    assert call["cause"] == "expired"
    assert call["detail"]["retried"] is True
    assert call["detail"]["recovered"] is True
    refresh = next(r for r in rows if r["kind"] == "refresh")
    assert refresh["outcome"] == "ok"
    assert refresh["detail"]["grant"] == "refresh_token"
    assert refresh["detail"]["access_token_fp"].startswith("sha256:")
    assert refresh["detail"]["refresh_token_fp"].startswith("sha256:")
    # One query names the cause of every expired call of the org.
    assert [r["id"] for r in await _logs(gw, org_id=conn.org_id, cause="expired")] == [
        r["id"] for r in rows if r["cause"] == "expired"
    ]
    async with gw.async_client() as tk:  # the SDK asks the same
        by_sdk = await tk.logs(org_id=conn.org_id, cause="expired", status="2xx", kind="call")
    assert [e["id"] for e in by_sdk] == [call["id"]]
    stored = await gw.gateway.store.connections.get("c1", with_credentials=True)
    assert stored.credentials is not None
    blob = repr(rows)
    assert stored.credentials.access_token.reveal() not in blob
    assert stored.credentials.refresh_token is not None
    assert stored.credentials.refresh_token.reveal() not in blob


async def test_a_revocation_is_a_status_row_and_our_own_answer_is_logged(
    gw: GatewayUnderTest,
) -> None:
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    user = org.users[0]
    gw.emulator.admin.set_password(user.username, "N3w-passw0rd!")  # sessions die
    answer = await _http(gw, "GET", f"/c/c1{QUERY}")
    assert answer.status_code in (401, 409)
    again = await _http(gw, "GET", f"/c/c1{QUERY}")
    assert again.status_code == 409  # ours: needs_reauth, no upstream call

    statuses = await _logs(gw, kind="status", connection_id="c1")
    assert len(statuses) == 1
    assert statuses[0]["outcome"] == "needs_reauth"
    assert statuses[0]["cause"] == "revoked"
    assert statuses[0]["detail"]["from"] == "active"
    assert statuses[0]["detail"]["to"] == "needs_reauth"
    ours = (await _logs(gw, kind="call", connection_id="c1", expect=2))[0]
    assert ours["status_code"] == 409
    assert ours["detail"]["answered_by"] == "tokenkeep"
    assert ours["detail"]["error_code"] == again.json()["error"]["code"]
    assert ours["cause"] == "revoked"
    assert ours["org_id"] == org.org_id  # refused without a token: still found by org


async def test_an_import_is_logged_with_fingerprints_only(gw: GatewayUnderTest) -> None:
    body = {
        "connection_id": "imp1",
        "integration": "emulator",
        "credentials": {
            "access_token": "import-access-token-value-1234",
            "refresh_token": "import-refresh-token-value-5678",
            "instance_url": gw.emulator.orgs[0].instance_url,
            "id": f"https://login.salesforce.com/id/{gw.emulator.orgs[0].org_id}/005000000000001AAA",
        },
    }
    assert (await _http(gw, "POST", "/connections", json=body)).status_code == 201
    rows = await _logs(gw, kind="import")
    assert len(rows) == 1
    assert rows[0]["connection_id"] == "imp1"
    assert rows[0]["org_id"] == gw.emulator.orgs[0].org_id
    assert rows[0]["detail"]["access_token_fp"].startswith("sha256:")
    assert "import-access-token-value" not in repr(rows)
    assert "import-refresh-token-value" not in repr(rows)


@pytest.mark.parametrize("log_query", [False, True])
async def test_the_query_string_is_kept_only_when_asked(tmp_path: Path, log_query: bool) -> None:
    async with running_gateway(tmp_path / "tk", orgs=1, log_query=log_query) as gw:
        await gw.connect("c1")
        assert (await _http(gw, "GET", f"/c/c1{QUERY}")).status_code == 200
        (call,) = await _logs(gw, kind="call", expect=1)
    expected = QUERY if log_query else QUERY.split("?", 1)[0]
    assert call["detail"]["path"] == expected
