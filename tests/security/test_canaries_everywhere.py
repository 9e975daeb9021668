"""Canary secrets through a broad tour of the gateway: none of them ever comes out.

Issue 13, suite item 12, on both engines (``db_url``: SQLite and PostgreSQL). The secrets:
every access and refresh token the emulator issued during the run (its real tokens), the
connected app's client secret (set to a canary before the integration is registered), a
JWT private key, the API key, the environment webhook endpoint's secret and the secret
``POST /webhooks`` generated. The tour: the hosted connect flow, an import, proxied reads
and writes, dead sessions (refresh and replay), a forced refresh, a revoked grant (the
proxied call fails), diagnoses, error answers (unknown ids, wrong key, bad bodies), the
dashboard logged in (every page), ``/metrics``, ``/logs``, webhooks delivered to a local
receiver, and the CLI ``tokenkeep logs --json`` (another process on the same database).

Then none of the canaries may appear in: the captured log (JSON, DEBUG), any answer's body
or headers (except the two token answers a client asked for and the one ``POST /webhooks``
answer that shows its secret), the webhook bodies and headers received, the dashboard
HTML, the CLI's output, every row of every table (``SELECT`` of every column), and, on
SQLite, the database files' bytes (WAL included). tests/test_canary.py covers the same with
imported canaries over the API alone; tests/test_canary_flows.py the flows without the
dashboard, webhooks and database.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
from pathlib import Path

import httpx
from sqlalchemy import select
from tests.dashboard.dash_helpers import PAGES, logged_in
from tests.events.receiver import eventually, receiving
from tests.test_canary import log_stream  # noqa: F401  (the fixture, reused)

from tokenkeep.harness import EMULATOR_INTEGRATION, register_emulator_app, running_gateway
from tokenkeep.store import Store
from tokenkeep.store.models import Base

TAG = "c4n4ry" + os.urandom(4).hex()
CLIENT_SECRET = f"clientsecret{TAG}"
PRIVATE_KEY = f"-----BEGIN PRIVATE KEY-----privatekey{TAG}-----END PRIVATE KEY-----"
WEBHOOK_KEY = f"webhooksecret{TAG}xxxxxxxxxx"  # the key bytes (ASCII, to be searchable)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY.encode()).decode()
LIMITS = "/services/data/v60.0/limits"
ACCOUNTS = "/services/data/v60.0/sobjects/Account"


def _found(canaries: set[str], blob: bytes | str) -> set[str]:
    data = blob.encode() if isinstance(blob, str) else blob
    return {c[:12] + "..." for c in canaries if c.encode() in data}


async def _database_text(store: Store) -> str:
    """Every value of every row of every table, as text (both engines)."""
    parts: list[str] = []
    async with store.db.read() as session:
        for table in Base.metadata.sorted_tables:
            for row in await session.execute(select(table)):
                for value in row:
                    parts.append(value.hex() if isinstance(value, bytes) else str(value))
                    if isinstance(value, bytes):
                        parts.append(value.decode("latin-1"))
    return "\n".join(parts)


async def _cli_logs(db_url: str, data_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(TOKENKEEP_DATABASE_URL=db_url, TOKENKEEP_DATA_DIR=str(data_dir))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tokenkeep", "logs", "--json", "--limit", "1000",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert b'"kind"' in out  # it really printed the log
    return out.decode() + err.decode()


async def test_canaries_never_leave(
    db_url: str,
    tmp_path: Path,
    log_stream: io.StringIO,  # noqa: F811
) -> None:
    data_dir = tmp_path / "tk"
    allowed: list[httpx.Response] = []  # answers that must carry a secret
    answers: list[httpx.Response] = []
    async with (
        receiving() as receiver,
        running_gateway(
            data_dir,
            orgs=2,
            integration=None,
            database_url=db_url,
            webhook_url=receiver.url,
            webhook_secret=WEBHOOK_SECRET,
            webhooks_enabled=True,
            webhook_poll_seconds=0.1,
        ) as gw,
    ):
        emu = gw.emulator
        emu.apps[0].client_secret = CLIENT_SECRET  # the app's secret, as set in Setup
        await register_emulator_app(emu, gw.base_url, gw.api_key, EMULATOR_INTEGRATION)
        auth = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
        async with httpx.AsyncClient(base_url=gw.base_url, headers=auth, timeout=60) as api:

            async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
                answer = await api.request(method, path, **kwargs)  # type: ignore[arg-type]
                answers.append(answer)
                return answer

            jwt = {"client_id": "3MVG9jwt", "auth_mode": "jwt_bearer", "private_key": PRIVATE_KEY}
            assert (await call("PUT", "/integrations/jwt", json=jwt)).status_code == 201
            await gw.connect("acme")  # the hosted connect flow
            await gw.connect("globex", org=1, via="import")
            created = await api.post("/webhooks", json={"url": receiver.url})
            assert created.status_code == 201, created.text
            allowed.append(created)
            endpoint_secret = created.json()["secret"]
            for path in ("/c/acme" + LIMITS, "/c/globex" + LIMITS):
                assert (await call("GET", path)).status_code == 200
            posted = await call(
                "POST", "/proxy" + ACCOUNTS, json={"Name": "x"}, headers={"Connection-Id": "acme"}
            )
            assert posted.status_code == 201
            gw.expire_sessions()  # dead sessions: the next call refreshes and replays
            assert (await call("GET", "/c/acme" + LIMITS)).status_code == 200
            allowed.append(await api.post("/connections/globex/refresh"))
            allowed.append(await api.get("/connections/acme/token"))
            assert [a.status_code for a in allowed[1:]] == [200, 200]
            await call("POST", "/connections/acme/diagnose")
            # A revoked grant: the proxied call fails, the diagnosis says so.
            emu.admin.revoke_app(emu.apps[0].client_id, emu.orgs[1].users[0].username)
            emu.admin.kill_sessions(None, emu.orgs[1].users[0].username)
            assert (await call("GET", "/c/globex" + LIMITS)).status_code >= 400
            await call("POST", "/connections/globex/diagnose")
            errors = [
                await call("GET", "/connections/nope"),
                await call("GET", "/c/nope" + LIMITS),
                await call("GET", "/connections/globex/token"),
                await call("POST", "/connections", json={"credentials": {"x": CLIENT_SECRET}}),
                await call("PUT", "/integrations/bad", json={"client_secret": 5}),
                await call("GET", "/connections", headers={"Authorization": "Bearer tk_wrong"}),
                await call("GET", "/c/acme" + LIMITS, headers={"Authorization": "Bearer tk_wrong"}),
            ]
            assert all(e.status_code >= 400 for e in errors)
            for path in ("/connections", "/integrations", "/logs", "/orgs", "/metrics"):
                assert (await call("GET", path)).status_code == 200
            metrics = answers[-1].text
            assert "tokenkeep_" in metrics
        pages: dict[str, str] = {}
        async with logged_in(gw) as browser:
            org_id = emu.orgs[0].org_id
            for path in (*PAGES, "/connections/acme", "/connections/globex", f"/orgs/{org_id}"):
                page = await browser.get("/dashboard" + path)
                assert page.status_code == 200, (path, page.status_code)
                pages[path] = page.text
        await eventually(lambda: len(receiver.got) >= 4, within=20)
        cli = await _cli_logs(db_url, data_dir)
        database = await _database_text(gw.gateway.store)
        issued = set(emu.state.access) | set(emu.state.refresh_index)

    canaries = {
        CLIENT_SECRET,
        PRIVATE_KEY.split("-----")[2],
        WEBHOOK_SECRET.removeprefix("whsec_"),
        WEBHOOK_KEY,
        endpoint_secret,
        gw.api_key.reveal(),
        *issued,
    }
    assert len(issued) >= 6  # codes, refreshes: the tour really got tokens
    assert any(t in a.text for a in allowed for t in issued)  # the scan can see a token
    leaks: dict[str, set[str]] = {}

    def check(where: str, blob: bytes | str) -> None:
        found = _found(canaries, blob)
        if found:
            leaks[where] = found

    logs = log_stream.getvalue()
    assert '"event": "proxy.call"' in logs  # the log was really captured
    check("the log", logs)
    for answer in answers:
        where = f"{answer.request.method} {answer.request.url.path} ({answer.status_code})"
        check(where + " body", answer.content)
        check(where + " headers", json.dumps(list(answer.headers.multi_items())))
    for answer in allowed:
        check(f"{answer.request.url.path} headers", json.dumps(list(answer.headers.multi_items())))
    for received in receiver.got:
        check("a webhook", received.body + json.dumps(received.headers).encode())
    for page_path, html in pages.items():
        check(f"dashboard {page_path or '/'}", html)
    check("tokenkeep logs --json", cli)
    check("the database rows", database)
    for file in sorted(tmp_path.rglob("*")):
        if file.is_file():  # the SQLite database, its WAL and the data dir
            check(str(file.relative_to(tmp_path)), file.read_bytes())
    assert leaks == {}
