"""Unmodified simple-salesforce (PyPI) against the emulator over HTTPS (``tls=True``).

simple-salesforce always speaks https and rebuilds its URLs from the host:port of
``instance_url`` (SALESFORCE.md, "Observed client behaviour"), so the emulator must serve
TLS with a certificate for 127.0.0.1; the test trusts the emulator's CA through the
``requests.Session`` it hands to ``Salesforce(...)``.

simple-salesforce is synchronous: its calls run in a worker thread (``asyncio.to_thread``)
so the emulator keeps serving in this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import requests
from simple_salesforce import Salesforce, SFType
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceResourceNotFound

from tokenkeep.emulator import Emulator


@pytest.fixture
async def tls_emulator() -> AsyncIterator[Emulator]:
    """A one-org emulator serving HTTPS with its own CA."""
    async with Emulator.running(orgs=1, seed=11, tls=True) as emu:
        assert emu.ca_file is not None
        yield emu


async def _access_token(emu: Emulator) -> dict[str, Any]:
    """A token response for org 0's first user (headless code, exchanged over TLS)."""
    app = emu.apps[0]
    user = emu.orgs[0].users[0]
    code = emu.admin.authorize(
        {
            "client_id": app.client_id,
            "username": user.username,
            "redirect_uri": app.redirect_uris[0],
        }
    )["code"]
    async with httpx.AsyncClient(verify=str(emu.ca_file)) as http:
        response = await http.post(
            f"{emu.login_url}/services/oauth2/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "redirect_uri": app.redirect_uris[0],
            },
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _client(emu: Emulator, token: dict[str, Any]) -> Salesforce:
    """simple-salesforce logged in by session id + instance URL, trusting the emulator CA."""
    session = requests.Session()
    session.verify = str(emu.ca_file)
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override `session.verify` (it only
    # keeps the session value when the environment is ignored), and many machines set them.
    session.trust_env = False
    return Salesforce(
        instance_url=token["instance_url"],
        session_id=token["access_token"],
        session=session,
    )


async def test_simple_salesforce_over_tls(tls_emulator: Emulator) -> None:
    """Query (one page, queryMore, query_all), CRUD and describe, as the library does them."""
    emu = tls_emulator
    assert emu.login_url.startswith("https://")
    contacts = int(emu.orgs[0].records.count("Contact"))
    assert contacts > 2000, "the seed must give more than one 2000-row page of Contacts"
    sf = _client(emu, await _access_token(emu))

    def queries() -> None:
        page = sf.query("SELECT Id, LastName FROM Contact")
        assert page["totalSize"] == contacts
        assert page["done"] is False
        assert len(page["records"]) == 2000
        assert page["records"][0]["attributes"]["type"] == "Contact"
        # The library parses Sforce-Limit-Info: this was the org's first counted call.
        usage = sf.api_usage["api-usage"]
        assert (usage.used, usage.total) == (1, 15000)
        more = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        assert more["done"] is True
        assert "nextRecordsUrl" not in more
        assert len(more["records"]) == contacts - 2000
        ids = {r["Id"] for r in page["records"]} | {r["Id"] for r in more["records"]}
        assert len(ids) == contacts

        everything = sf.query_all("SELECT Id FROM Contact")
        assert everything["totalSize"] == contacts
        assert everything["done"] is True
        assert {r["Id"] for r in everything["records"]} == ids

        lazy = list(sf.query_all_iter("SELECT Id FROM Contact"))
        assert len(lazy) == contacts

    # `sf.Account` is what users write; its attribute magic is typed as a union, hence cast.
    account_type = cast(SFType, sf.Account)

    def crud() -> None:
        created = account_type.create({"Name": "simple-salesforce Ltd", "Industry": "Energy"})
        assert created["success"] is True
        assert created["errors"] == []
        account_id = created["id"]
        assert account_id.startswith("001")
        assert len(account_id) == 18

        fetched = account_type.get(account_id)
        assert fetched["Name"] == "simple-salesforce Ltd"
        assert fetched["Id"] == account_id

        assert account_type.update(account_id, {"Name": "simple-salesforce plc"}) == 204
        assert account_type.get(account_id)["Name"] == "simple-salesforce plc"
        found = sf.query(f"SELECT Id, Name FROM Account WHERE Id = '{account_id}'")
        assert [r["Name"] for r in found["records"]] == ["simple-salesforce plc"]

        assert account_type.delete(account_id) == 204
        with pytest.raises(SalesforceResourceNotFound) as gone:
            account_type.get(account_id)
        assert gone.value.status == 404
        assert cast(list[dict[str, str]], gone.value.content)[0]["errorCode"] == "NOT_FOUND"
        # queryAll (include_deleted) still sees the deleted row; query does not.
        assert sf.query(f"SELECT Id FROM Account WHERE Id = '{account_id}'")["totalSize"] == 0
        deleted = sf.query_all(
            f"SELECT Id, IsDeleted FROM Account WHERE Id = '{account_id}'", include_deleted=True
        )
        assert [r["IsDeleted"] for r in deleted["records"]] == [True]

    def describes() -> None:
        account = account_type.describe()
        assert account["name"] == "Account"
        names = {f["name"] for f in account["fields"]}
        assert {"Id", "Name", "Industry", "OwnerId"} <= names
        everything = sf.describe()
        assert everything is not None
        assert {"Account", "Contact"} <= {o["name"] for o in everything["sobjects"]}
        assert cast(SFType, sf.Contact).metadata()["objectDescribe"]["name"] == "Contact"
        limits = sf.limits()
        assert limits["DailyApiRequests"]["Max"] == 15000
        # Remaining counts this very call too.
        assert limits["DailyApiRequests"]["Remaining"] == 15000 - sf.api_usage["api-usage"].used

    await asyncio.to_thread(queries)
    await asyncio.to_thread(crud)
    await asyncio.to_thread(describes)
    # Close the keep-alive connections so the emulator shuts down without waiting on them.
    sf.session.close()
    # Every call went to the instance host with the one session.
    assert emu.admin.requests(path="/services/data", org_id=emu.orgs[0].org_id) != []


async def test_simple_salesforce_raises_its_expired_session_error(tls_emulator: Emulator) -> None:
    """Past the org's session timeout the library raises SalesforceExpiredSession."""
    emu = tls_emulator
    sf = _client(emu, await _access_token(emu))

    first = await asyncio.to_thread(sf.query, "SELECT Id FROM Account LIMIT 1")
    assert first["totalSize"] == 1

    emu.admin.advance_clock(emu.orgs[0].session_timeout_seconds + 1)

    def expired_query() -> SalesforceExpiredSession:
        with pytest.raises(SalesforceExpiredSession) as caught:
            sf.query("SELECT Id FROM Account LIMIT 1")
        return caught.value

    error = await asyncio.to_thread(expired_query)
    assert error.status == 401
    assert error.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    log = emu.admin.requests(path="/services/data")
    assert [(r["status"], r["errorCode"]) for r in log[-1:]] == [(401, "INVALID_SESSION_ID")]
    sf.session.close()


@pytest.mark.multiprocess
async def test_simple_salesforce_against_the_cli_emulator(tmp_path: Path) -> None:
    """What a user does: ``tokenkeep emulator --tls --json`` in a shell, then
    simple-salesforce trusting the printed CA file, driven through the admin HTTP API."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from tokenkeep.cli import main; main()",
        "emulator",
        "--port",
        "0",
        "--orgs",
        "1",
        "--tls",
        "--json",
        "--seed",
        "4",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(tmp_path),
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, "the emulator exited before printing its JSON document"
        doc = json.loads(line)
        ca_file = doc["ca_file"]
        app = doc["apps"][0]
        org = doc["orgs"][0]
        user = org["users"][0]
        assert doc["login_url"].startswith("https://")

        async with httpx.AsyncClient(verify=ca_file, timeout=10) as http:
            approved = await http.post(
                f"{doc['admin_url']}/authorize",
                json={
                    "client_id": app["client_id"],
                    "username": user["username"],
                    "redirect_uri": app["redirect_uris"][0],
                },
            )
            assert approved.status_code == 200, approved.text
            token = await http.post(
                f"{doc['login_url']}/services/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": approved.json()["code"],
                    "client_id": app["client_id"],
                    "client_secret": app["client_secret"],
                    "redirect_uri": app["redirect_uris"][0],
                },
            )
            assert token.status_code == 200, token.text
            session = requests.Session()
            session.verify = ca_file
            session.trust_env = False
            sf = Salesforce(
                instance_url=token.json()["instance_url"],
                session_id=token.json()["access_token"],
                session=session,
            )
            everything = await asyncio.to_thread(sf.query_all, "SELECT Id FROM Contact")
            assert everything["totalSize"] > 2000
            assert len(everything["records"]) == everything["totalSize"]

            advanced = await http.post(
                f"{doc['admin_url']}/clock/advance", json={"seconds": 7200 + 1}
            )
            assert advanced.status_code == 200

            def expired() -> None:
                with pytest.raises(SalesforceExpiredSession):
                    sf.query("SELECT Id FROM Account")

            await asyncio.to_thread(expired)
            session.close()
            log = await http.get(f"{doc['admin_url']}/requests", params={"path": "/services/data"})
            statuses = [r["status"] for r in log.json()["requests"]]
            assert statuses[-1] == 401
            assert set(statuses[:-1]) == {200}
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
