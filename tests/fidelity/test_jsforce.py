"""Unmodified jsforce 3 (npm) against the emulator: the emulator is faithful enough for it.

The node script ``tests/node/jsforce_session.mjs`` exchanges an authorization code through
jsforce's own ``Connection.authorize``, runs a paginated query (``autoFetch`` and
``queryMore``) and a create/retrieve/update/delete cycle, and then waits on stdin. The test
moves the emulator clock past the org's session timeout and asks for another round: jsforce
must see the 401 INVALID_SESSION_ID, refresh with its refresh token by itself, replay the
request and carry on. The emulator's request log proves how many refresh grants happened.
The same script also covers a stored (already expired) session, jsforce's OAuth2 password
login, the browser flow with PKCE through the emulator's HTML pages, jsforce's dropping of
rotated refresh tokens, and its refusal to refresh an API Client Control 401.
``tests/node/jsforce_api_tour.mjs`` walks the rest of the API surface jsforce users touch.

The emulator runs in this test's event loop and node runs as an asyncio subprocess, so the
emulator keeps serving while the test waits for node's output.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tokenkeep.emulator import Emulator

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "jsforce_session.mjs"
TOUR = NODE_DIR / "jsforce_api_tour.mjs"
# Generous: node start-up plus a handful of local HTTP calls take well under two seconds.
STEP_TIMEOUT = 30.0
SOQL = "SELECT Id, Name FROM Contact"


@pytest.fixture
def node() -> str:
    """The node binary, or skip (fail under CI=true when jsforce is not installed).

    Tests list this fixture before ``emulator`` so a skip does not start an emulator.
    """
    node = shutil.which("node")
    installed = (NODE_DIR / "node_modules" / "jsforce" / "package.json").is_file()
    if node is not None and installed:
        return node
    reason = (
        "node is not on PATH"
        if node is None
        else f"jsforce is not installed: run `npm install` in {NODE_DIR}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true requires the jsforce fidelity tests to run, but {reason}")
    pytest.skip(reason)


class NodeSession:
    """A running ``jsforce_session.mjs``: read its JSON lines, tell it to run another round."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self) -> dict[str, Any]:
        """The next JSON line node printed (fails the test with node's stderr on EOF)."""
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), STEP_TIMEOUT)
        if not line:
            stderr = b""
            if self.proc.stderr is not None:
                stderr = await asyncio.wait_for(self.proc.stderr.read(), STEP_TIMEOUT)
            pytest.fail(f"node ended without output; stderr:\n{stderr.decode(errors='replace')}")
        doc: dict[str, Any] = json.loads(line)
        assert "fatal" not in doc, doc["fatal"]
        return doc

    async def next_round(self) -> dict[str, Any]:
        """Ask node for another query + CRUD round and return its result line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"next\n")
        await self.proc.stdin.drain()
        return await self.read()

    async def close(self) -> None:
        """End the script (EOF on stdin) and reap it."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), STEP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _start_node(node: str, config: dict[str, Any], script: Path = SCRIPT) -> NodeSession:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(script),
        cwd=str(NODE_DIR),
        env={**os.environ, "TK_JSFORCE_CONFIG": json.dumps(config)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeSession(proc)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """A fresh two-org emulator with seeded data, in this test's event loop."""
    async with Emulator.running(orgs=2, seed=7) as emu:
        yield emu


def _oauth_config(emu: Emulator) -> dict[str, Any]:
    """jsforce's OAuth2 config for the emulator's connected app (no credentials yet)."""
    app = emu.apps[0]
    return {
        "loginUrl": emu.login_url,
        "clientId": app.client_id,
        "clientSecret": app.client_secret,
        "redirectUri": app.redirect_uris[0],
        "version": "60.0",
        "soql": SOQL,
    }


async def _jsforce_config(emu: Emulator) -> dict[str, Any]:
    """The OAuth2 config plus a fresh authorization code for org 0's first user (approved
    headlessly through the admin API)."""
    config = _oauth_config(emu)
    config["code"] = emu.admin.authorize(
        {
            "client_id": config["clientId"],
            "username": emu.orgs[0].users[0].username,
            "redirect_uri": config["redirectUri"],
            "scope": "api refresh_token",
        }
    )["code"]
    return config


def _grants(emu: Emulator, grant_type: str) -> list[dict[str, Any]]:
    """Token-endpoint calls with ``grant_type`` from the emulator's request log."""
    return emu.admin.requests(grant_type=grant_type, path="/services/oauth2/token")


def _contact_count(emu: Emulator) -> int:
    """How many Contacts org 0 holds (the seed gives more than one 2000-row page)."""
    return int(emu.orgs[0].records.count("Contact"))


def _past_session_timeout(emu: Emulator) -> None:
    """Move the emulator clock beyond org 0's inactivity timeout."""
    emu.admin.advance_clock(emu.orgs[0].session_timeout_seconds + 60)


def _assert_round_ok(result: dict[str, Any], contacts: int) -> None:
    """One round of query + CRUD worked the way a Salesforce org answers it."""
    assert result["ok"], result
    assert result["totalSize"] == contacts
    assert result["autoFetchRecords"] == contacts
    # Salesforce pages at 2000 rows: more contacts than that take more than one request.
    assert result["autoFetchRequests"] == -(-contacts // 2000)
    assert sum(result["pages"]) == contacts
    assert all(n <= 2000 for n in result["pages"])
    assert len(result["pages"]) == -(-contacts // 2000)
    assert result["created"]["success"] is True
    assert result["created"]["id"].startswith("001")
    assert result["fetchedName"].startswith("jsforce ")
    assert result["updated"] == {"id": result["created"]["id"], "success": True}
    assert result["refetchedName"] == result["fetchedName"] + " v2"
    assert result["destroyed"] == {"id": result["created"]["id"], "success": True}
    assert result["afterDelete"] == "NOT_FOUND"


async def test_jsforce_refreshes_by_itself_after_the_session_expires(
    node: str, emulator: Emulator
) -> None:
    """OAuth2 code exchange, query with pagination, CRUD; expiry; one silent refresh."""
    emu = emulator
    org = emu.orgs[0]
    contacts = _contact_count(emu)
    assert contacts > 2000, "the seed must give more than one page of Contacts"

    session = await _start_node(node, await _jsforce_config(emu))
    try:
        authorized = await session.read()
        assert authorized["authorized"] is True
        assert authorized["hasRefreshToken"] is True
        assert authorized["instanceUrl"] == org.instance_url
        assert authorized["organizationId"] == org.org_id

        first = await session.read()
        _assert_round_ok(first, contacts)
        assert first["refreshEvents"] == 0
        assert first["tokenChanged"] is False
        assert _grants(emu, "authorization_code") != []
        assert _grants(emu, "refresh_token") == []

        # Past the inactivity timeout: the access token jsforce holds is now dead.
        _past_session_timeout(emu)

        second = await session.next_round()
        _assert_round_ok(second, contacts)
        assert second["refreshEvents"] == 1
        assert second["tokenChanged"] is True
        assert second["instanceUrl"] == org.instance_url

        # A third round inside the new session needs no further refresh.
        third = await session.next_round()
        _assert_round_ok(third, contacts)
        assert third["refreshEvents"] == 1
    finally:
        await session.close()

    refreshes = _grants(emu, "refresh_token")
    assert len(refreshes) == 1, refreshes
    assert refreshes[0]["status"] == 200
    # The refresh was triggered by exactly one rejected call with the expired token.
    rejected = [r for r in emu.admin.requests() if r.get("errorCode") == "INVALID_SESSION_ID"]
    assert len(rejected) == 1, rejected


async def test_jsforce_does_not_keep_a_rotated_refresh_token(node: str, emulator: Emulator) -> None:
    """The documented jsforce flaw, reproduced: with rotation on, its second refresh fails.

    jsforce's refresh callback stores the new access token but drops the rotated refresh
    token, so the next refresh replays a rotated-out token; the emulator's reuse detection
    answers invalid_grant and revokes the family (SALESFORCE.md, "What the best-known
    clients do").
    """
    emu = emulator
    app = emu.apps[0]
    emu.admin.patch_app(app.client_id, {"rotate_refresh_tokens": True})
    contacts = _contact_count(emu)

    session = await _start_node(node, await _jsforce_config(emu))
    try:
        assert (await session.read())["authorized"] is True
        _assert_round_ok(await session.read(), contacts)

        _past_session_timeout(emu)
        second = await session.next_round()
        _assert_round_ok(second, contacts)
        assert second["refreshEvents"] == 1

        _past_session_timeout(emu)
        third = await session.next_round()
        assert third["ok"] is False
        assert "expired access/refresh token" in third["error"]
        assert third["refreshEvents"] == 1
    finally:
        await session.close()

    refreshes = _grants(emu, "refresh_token")
    assert [(r["status"], r["errorCode"]) for r in refreshes] == [
        (200, None),
        (400, "invalid_grant"),
    ]
    # Reuse detection took the whole family: the rotated token jsforce dropped is dead too.
    assert emu.admin.get_state()["tokens"]["refresh"] == 0


async def test_jsforce_resumes_a_stored_session_that_expired_meanwhile(
    node: str, emulator: Emulator
) -> None:
    """Tokens stored by someone else (accessToken + refreshToken + instanceUrl) and already
    expired: jsforce's first call gets the 401, it refreshes once and the round succeeds."""
    emu = emulator
    config = await _jsforce_config(emu)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{emu.login_url}/services/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": config.pop("code"),
                "client_id": config["clientId"],
                "client_secret": config["clientSecret"],
                "redirect_uri": config["redirectUri"],
            },
        )
    assert response.status_code == 200, response.text
    tokens = response.json()
    config.update(
        accessToken=tokens["access_token"],
        refreshToken=tokens["refresh_token"],
        instanceUrl=tokens["instance_url"],
    )
    _past_session_timeout(emu)
    contacts = _contact_count(emu)

    session = await _start_node(node, config)
    try:
        first = await session.read()
        _assert_round_ok(first, contacts)
        assert first["refreshEvents"] == 1
        assert first["tokenChanged"] is True
    finally:
        await session.close()

    assert [r["status"] for r in _grants(emu, "refresh_token")] == [200]
    assert len(_grants(emu, "authorization_code")) == 1


async def test_jsforce_api_tour(node: str, emulator: Emulator) -> None:
    """identity, limits, describes, the SOQL builder, queryAll paging, sObject Collections,
    composite, Bulk 2.0 ingest and error codes, each the way jsforce itself calls them."""
    emu = emulator
    org = emu.orgs[0]
    user = org.users[0]
    records = org.records
    energy = sorted(
        (r for r in records.rows("Account") if r["Industry"] == "Energy"), key=lambda r: r["Name"]
    )[:5]
    assert energy, "the seed must hold Energy accounts"

    session = await _start_node(node, await _jsforce_config(emu), TOUR)
    try:
        steps = (await session.read())["steps"]
    finally:
        await session.close()
    failed = {name: step for name, step in steps.items() if not step["ok"]}
    assert set(failed) == {"badField", "badSyntax", "missingRecord"}, failed
    value = {name: step.get("value") for name, step in steps.items()}

    assert value["identity"] == {
        "user_id": user.user_id,
        "organization_id": org.org_id,
        "username": user.username,
    }
    assert value["limits"]["Max"] == org.daily_api_limit
    assert 0 < value["limits"]["Remaining"] < org.daily_api_limit
    assert {"Account", "Contact"} <= set(value["describeGlobal"])
    assert value["describe"]["name"] == "Contact"
    assert {"Id", "LastName", "AccountId", "Email"} <= set(value["describe"]["fields"])
    assert value["find"] == [
        {"Id": r["Id"], "Name": r["Name"], "Industry": "Energy"} for r in energy
    ]
    assert value["count"] == records.count("Contact")
    assert value["scanAll"] == {
        "totalSize": records.count("Contact"),
        "records": records.count("Contact"),
    }

    created = value["createMany"]
    assert [(r["success"], r["errors"]) for r in created] == [(True, []), (True, [])]
    assert value["retrieveMany"] == ["jsforce tour 1", "jsforce tour 2"]
    assert [(r["id"], r["success"]) for r in value["updateMany"]] == [
        (r["id"], True) for r in created
    ]
    assert value["readBack"] == ["toured"]
    assert [(r["id"], r["success"]) for r in value["destroyMany"]] == [
        (r["id"], True) for r in created
    ]
    assert all(records.get("Account", r["id"]) is None for r in created)

    assert value["composite"] == [
        {"ref": "acct", "status": 201, "name": None},
        {"ref": "read", "status": 200, "name": "composite tour"},
    ]

    bulk = value["bulk2"]
    assert bulk["failed"] == 0
    assert [(r["created"], r["name"]) for r in bulk["successful"]] == [
        ("true", "bulk tour 1"),
        ("true", "bulk tour 2"),
    ]
    for row in bulk["successful"]:
        stored = records.get("Account", row["id"])
        assert stored is not None
        assert stored["Name"] == row["name"]

    assert failed["badField"]["errorCode"] == "INVALID_FIELD"
    assert failed["badSyntax"]["errorCode"] == "MALFORMED_QUERY"
    assert failed["missingRecord"]["errorCode"] == "NOT_FOUND"


async def test_jsforce_does_not_refresh_a_session_refused_by_api_client_control(
    node: str, emulator: Emulator
) -> None:
    """jsforce skips its refresh for "This session is not valid for use with the REST API"
    (the API Client Control 401): the emulator's message must match jsforce's exactly, or
    jsforce would refresh in a loop."""
    emu = emulator
    org = emu.orgs[0]
    emu.admin.patch_org(org.org_id, {"api_client_control": True, "allowed_client_ids": []})

    session = await _start_node(node, await _jsforce_config(emu))
    try:
        assert (await session.read())["authorized"] is True
        refused = await session.read()
    finally:
        await session.close()

    assert refused["ok"] is False
    assert refused["errorCode"] == "INVALID_SESSION_ID"
    assert refused["error"] == "This session is not valid for use with the REST API"
    assert refused["refreshEvents"] == 0
    assert _grants(emu, "refresh_token") == []
    data_calls = emu.admin.requests(path="/services/data")
    assert [(r["status"], r["errorCode"]) for r in data_calls] == [(401, "INVALID_SESSION_ID")]


async def test_jsforce_password_login_logs_in_again_after_expiry(
    node: str, emulator: Emulator
) -> None:
    """``conn.login(username, password)`` with a client secret is the OAuth2 password grant;
    on expiry jsforce logs in again (no refresh token exists) and carries on."""
    emu = emulator
    org = emu.orgs[0]
    user = org.users[1]
    config = _oauth_config(emu)
    config.update(username=user.username, password=user.password)
    contacts = _contact_count(emu)

    session = await _start_node(node, config)
    try:
        authorized = await session.read()
        assert authorized["authorized"] is True
        assert authorized["hasRefreshToken"] is False
        assert authorized["userId"] == user.user_id
        _assert_round_ok(await session.read(), contacts)

        _past_session_timeout(emu)
        again = await session.next_round()
        _assert_round_ok(again, contacts)
        assert again["refreshEvents"] == 1
        assert again["tokenChanged"] is True
    finally:
        await session.close()

    assert [r["status"] for r in _grants(emu, "password")] == [200, 200]
    assert _grants(emu, "refresh_token") == []


async def test_jsforce_retrieves_several_records_at_once(node: str, emulator: Emulator) -> None:
    """``sobject('Account').retrieve([id1, id2])`` through sObject Collections
    (``POST /composite/sobjects/{type}``, what jsforce uses on API 42+), on its own so a
    regression names itself."""
    config = await _jsforce_config(emulator)
    config["only"] = ["createMany", "retrieveMany"]
    session = await _start_node(node, config, TOUR)
    try:
        steps = (await session.read())["steps"]
    finally:
        await session.close()
    assert steps["createMany"]["ok"], steps
    assert steps["retrieveMany"] == {"ok": True, "value": ["jsforce tour 1", "jsforce tour 2"]}


class _FormParser(HTMLParser):
    """The first ``<form>`` of a page: its action and its hidden inputs (what a browser
    would submit along with the fields the user fills in)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
        elif (
            tag == "input"
            and self.action is not None
            and not self._done
            and values.get("type") == "hidden"
            and values.get("name")
        ):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._done = True


async def _submit(http: httpx.AsyncClient, page: httpx.Response, **fields: str) -> httpx.Response:
    """Submit the page's form with ``fields`` filled in, like a browser."""
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    form = _FormParser()
    form.feed(page.text)
    assert form.action is not None, page.text
    return await http.post(urljoin(str(page.url), form.action), data={**form.fields, **fields})


def _code_from(redirect: httpx.Response, redirect_uri: str, state: str) -> str:
    assert redirect.status_code == 302, redirect.text
    location = redirect.headers["location"]
    assert location.startswith(redirect_uri + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == [state]
    return query["code"][0]


async def test_jsforce_browser_flow_with_pkce(node: str, emulator: Emulator) -> None:
    """jsforce builds the authorize URL (PKCE S256 via ``useVerifier``); the test plays the
    browser through the emulator's HTML login and approval pages; jsforce redeems the code
    with its code_verifier. A code redeemed without the verifier is refused."""
    emu = emulator
    user = emu.orgs[0].users[0]
    config = _oauth_config(emu)
    config.update(browserFlow=True, state="st-42")
    contacts = _contact_count(emu)

    session = await _start_node(node, config)
    try:
        authorize_url = (await session.read())["authorizeUrl"]
        assert authorize_url.startswith(emu.login_url + "/services/oauth2/authorize?")
        assert "code_challenge=" in authorize_url
        async with httpx.AsyncClient(timeout=10) as browser:
            login_page = await browser.get(authorize_url)
            approve_page = await _submit(
                browser, login_page, username=user.username, password=user.password
            )
            assert "Allow" in approve_page.text
            first_code = _code_from(
                await _submit(browser, approve_page, decision="allow"),
                config["redirectUri"],
                "st-42",
            )
            # Redeeming a PKCE code without its verifier fails (the code is then spent).
            refused = await browser.post(
                f"{emu.login_url}/services/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": first_code,
                    "client_id": config["clientId"],
                    "client_secret": config["clientSecret"],
                    "redirect_uri": config["redirectUri"],
                },
            )
            assert refused.status_code == 400
            assert refused.json() == {
                "error": "invalid_grant",
                "error_description": "invalid code verifier",
            }
            # Logged in and already approved: the same URL redirects with a code at once.
            code = _code_from(await browser.get(authorize_url), config["redirectUri"], "st-42")

        assert session.proc.stdin is not None
        session.proc.stdin.write(code.encode() + b"\n")
        await session.proc.stdin.drain()
        authorized = await session.read()
        assert authorized["authorized"] is True
        assert authorized["hasRefreshToken"] is True
        assert authorized["userId"] == user.user_id
        _assert_round_ok(await session.read(), contacts)
    finally:
        await session.close()

    codes = _grants(emu, "authorization_code")
    assert [(r["status"], r["errorCode"]) for r in codes] == [(400, "invalid_grant"), (200, None)]
