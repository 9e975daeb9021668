"""Unmodified jsforce 3 through the gateway's drop-in base URL ``/c/{connection_id}``.

jsforce is configured the way a user would: ``instanceUrl = <gateway>/c/<id>`` and the
tokenkeep API key as its ``accessToken`` (no refresh token, no OAuth2 client: jsforce never
sees a Salesforce credential). It keeps the path prefix of ``instanceUrl``
(SALESFORCE.md, "Observed client behaviour"), so every call goes through the proxy.

The node side is H5's ``tests/node/jsforce_session.mjs`` (a paginated query with autoFetch
and queryMore, then create/retrieve/update/destroy, one JSON line per round). After the
first round the emulator's clock moves past the session timeout: the next round must
succeed with no refresh on jsforce's side (``refreshEvents == 0``) and exactly one refresh
grant in the emulator's log, done by the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tokenkeep.testing import GatewayUnderTest

pytestmark = [pytest.mark.node, pytest.mark.tokenkeep_gateway(orgs=1, seed=7)]

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "jsforce_session.mjs"
STEP_TIMEOUT = 60.0
SOQL = "SELECT Id, Name FROM Contact"


@pytest.fixture
def node() -> str:
    """The node binary with jsforce installed, or skip (fail under CI=true)."""
    node = shutil.which("node")
    if node is not None and (NODE_DIR / "node_modules" / "jsforce" / "package.json").is_file():
        return node
    reason = "node is not on PATH" if node is None else f"run `npm install` in {NODE_DIR}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true requires the jsforce tests to run, but {reason}")
    pytest.skip(reason)


class _Node:
    """The running script: read its JSON lines; "next" asks for another round."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), STEP_TIMEOUT)
        if not line:
            assert self.proc.stderr is not None
            err = await asyncio.wait_for(self.proc.stderr.read(), STEP_TIMEOUT)
            pytest.fail(f"node ended without output; stderr:\n{err.decode(errors='replace')}")
        doc: dict[str, Any] = json.loads(line)
        assert "fatal" not in doc, doc["fatal"]
        return doc

    async def next_round(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"next\n")
        await self.proc.stdin.drain()
        return await self.read()

    async def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), STEP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _start(node: str, config: dict[str, Any]) -> _Node:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        cwd=str(NODE_DIR),
        env={**os.environ, "TK_JSFORCE_CONFIG": json.dumps(config)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return _Node(proc)


def _assert_round_ok(result: dict[str, Any], contacts: int) -> None:
    assert result["ok"], result
    assert result["totalSize"] == contacts
    assert result["autoFetchRecords"] == contacts
    assert result["autoFetchRequests"] == -(-contacts // 2000)
    assert sum(result["pages"]) == contacts
    assert len(result["pages"]) == -(-contacts // 2000)
    assert result["created"]["success"] is True
    assert result["created"]["id"].startswith("001")
    assert result["updated"] == {"id": result["created"]["id"], "success": True}
    assert result["refetchedName"] == result["fetchedName"] + " v2"
    assert result["destroyed"] == {"id": result["created"]["id"], "success": True}
    assert result["afterDelete"] == "NOT_FOUND"
    # jsforce never refreshed anything and kept the API key as its token: the gateway did.
    assert result["refreshEvents"] == 0
    assert result["tokenChanged"] is False
    assert result["hasRefreshToken"] is False


async def test_jsforce_through_the_proxy_survives_session_expiry(
    node: str, tokenkeep_gateway: GatewayUnderTest
) -> None:
    gw = tokenkeep_gateway
    emu = gw.emulator
    contacts = int(emu.orgs[0].records.count("Contact"))
    assert contacts > 2000, "the seed must give more than one 2000-row page of Contacts"
    await gw.connect("js1")
    base = gw.proxy_url("js1")

    session = await _start(
        node,
        {
            "accessToken": gw.api_key.reveal(),
            "instanceUrl": base,
            "version": "60.0",
            "soql": SOQL,
        },
    )
    try:
        first = await session.read()
        _assert_round_ok(first, contacts)
        assert first["instanceUrl"] == base
        before = gw.grants("refresh_token")
        rejected_before = len(emu.admin.requests(path="/services/data"))

        gw.expire_sessions()
        second = await session.next_round()
        _assert_round_ok(second, contacts)
        assert gw.grants("refresh_token") == before + 1

        third = await session.next_round()
        _assert_round_ok(third, contacts)
        assert gw.grants("refresh_token") == before + 1
    finally:
        await session.close()

    # Salesforce refused exactly one call (the first after the expiry), which the gateway
    # replayed once with the refreshed token.
    data_calls = emu.admin.requests(path="/services/data")[rejected_before:]
    refused = [r for r in data_calls if r.get("errorCode") == "INVALID_SESSION_ID"]
    assert len(refused) == 1, refused
