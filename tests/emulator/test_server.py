"""Serving: the CLI's --json document, TLS with the generated CA, fixed ports, the fixture."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys

import httpx
import pytest
from emu_helpers import limits, password_grant

from tokenkeep.emulator import Emulator


@pytest.mark.multiprocess
async def test_cli_json_prints_exactly_one_document_when_ready() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from tokenkeep.cli import main; main()",
        "emulator",
        "--json",
        "--port",
        "0",
        "--orgs",
        "2",
        "--seed",
        "3",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        doc = json.loads(line)
        assert set(doc) >= {"login_url", "admin_url", "apps", "orgs"}
        app = doc["apps"][0]
        assert app["client_id"].startswith("3MVG9")
        assert {"client_id", "client_secret", "redirect_uris"} <= set(app)
        assert len(doc["orgs"]) == 2
        org = doc["orgs"][0]
        assert {"org_id", "instance_url", "my_domain_url", "users"} <= set(org)
        user = org["users"][0]
        assert {"username", "password", "user_id"} <= set(user)
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(
                doc["login_url"] + "/services/oauth2/token",
                data={
                    "grant_type": "password",
                    "client_id": app["client_id"],
                    "client_secret": app["client_secret"],
                    "username": user["username"],
                    "password": user["password"],
                },
            )
            assert r.status_code == 200
            assert r.json()["instance_url"] == org["instance_url"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert out == b""  # nothing after the one document
    assert proc.returncode == 0


async def test_tls_serves_https_trusted_through_the_generated_ca() -> None:
    async with Emulator.running(orgs=1, tls=True) as emu:
        assert emu.login_url.startswith("https://")
        assert emu.ca_file is not None
        context = ssl.create_default_context(cafile=str(emu.ca_file))
        async with httpx.AsyncClient(verify=context, timeout=10) as http:
            grant = await password_grant(http, emu, emu.orgs[0].users[0])
            assert grant["instance_url"].startswith("https://")
            r = await limits(http, grant["instance_url"], grant["access_token"])
            assert r.status_code == 200
        async with httpx.AsyncClient(timeout=10) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get(emu.login_url + "/services/oauth2/userinfo")


def _free_base_port() -> int:
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base > 60000:
            continue
        try:
            with socket.socket() as a, socket.socket() as b, socket.socket() as c:
                a.bind(("127.0.0.1", base))
                b.bind(("127.0.0.1", base + 1))
                c.bind(("127.0.0.1", base + 2))
        except OSError:
            continue
        return base
    raise RuntimeError("no three consecutive free ports")


async def test_fixed_port_puts_org_i_on_port_plus_i() -> None:
    base = _free_base_port()
    async with Emulator.running(orgs=2, port=base) as emu:
        assert emu.login_url == f"http://127.0.0.1:{base}"
        assert [o.instance_url for o in emu.orgs] == [
            f"http://127.0.0.1:{base + 1}",
            f"http://127.0.0.1:{base + 2}",
        ]


async def test_seed_makes_identities_deterministic() -> None:
    async with Emulator.running(orgs=1, seed=42) as one, Emulator.running(orgs=1, seed=42) as two:
        assert one.orgs[0].org_id == two.orgs[0].org_id
        assert one.apps[0].client_id == two.apps[0].client_id
        assert one.orgs[0].users[0].password == two.orgs[0].users[0].password


@pytest.mark.salesforce_emulator(orgs=3)
async def test_fixture_marker_configures_the_emulator(salesforce_emulator: Emulator) -> None:
    assert len(salesforce_emulator.orgs) == 3
    assert len({o.instance_url for o in salesforce_emulator.orgs}) == 3
