"""The tour's first steps (register the app, connect the orgs, send calls, two hours pass)
and the helpers every step uses.

:class:`Tour` talks to the gateway over HTTP only, the way an app would (one client with the
API key), and to the emulator's admin API as the orgs' admins would. What a step returns
and raises is in :mod:`tokenkeep.demo.results`; the six cause steps are in
:mod:`tokenkeep.demo.causes`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tokenkeep.demo.results import FailingCall, StepFailed, Verdict, duration, expect
from tokenkeep.harness import (
    ConnectFlowError,
    GatewayUnderTest,
    connect_through_flow,
    register_emulator_app,
)

__all__ = [
    "API_VERSION",
    "CONNECTIONS",
    "DATA",
    "HTTP_TIMEOUT",
    "INTEGRATION",
    "QUERY",
    "Tour",
]

#: The integration key the tour registers for the emulator's connected app.
INTEGRATION = "salesforce"
API_VERSION = "v60.0"
DATA = f"/services/data/{API_VERSION}"
QUERY = "SELECT Id, Name FROM Account LIMIT 5"
#: The connections the tour creates: (connection id, emulator org index).
CONNECTIONS: tuple[tuple[str, int], ...] = (("acme", 0), ("globex", 1), ("initech", 2))
_BURST = 10  # concurrent calls per connection right after the session timeout
HTTP_TIMEOUT = 15.0
# Evidence printed above or common to every cause (the verdict keeps it all).
_UNTELLING = frozenset({"answer", "token_age_seconds"})


class Tour:
    """The steps, sharing one HTTP client (the app's view) and the emulator (the org's)."""

    def __init__(self, env: GatewayUnderTest, http: httpx.AsyncClient) -> None:
        self.env = env
        self.emu = env.emulator
        self.http = http
        self.index = dict(CONNECTIONS)

    # -- helpers ------------------------------------------------------------------------
    def org(self, connection_id: str) -> Any:
        """The emulator org behind ``connection_id`` (looked up again: a move replaces it)."""
        return self.emu.orgs[self.index[connection_id]]

    def grants(self, grant_type: str = "refresh_token", org_id: str | None = None) -> int:
        """Token-endpoint calls with ``grant_type`` in the emulator's log (optionally one org)."""
        return self.env.grants(grant_type, org_id=org_id)

    def data_calls(self, org_id: str | None = None, since: float | None = None) -> list[Any]:
        """REST data API calls the emulator has logged (optionally one org, since a time)."""
        return self.emu.admin.requests(org_id=org_id, path="/services/data", since=since)

    def now(self) -> float:
        """The shared clock's time, for the emulator log's ``since``."""
        clock = self.env.clock
        if clock is None:  # demo_environment always shares one
            raise StepFailed("the demo runs without a shared clock")
        return clock.time()

    def failing_call(self, since: float, by: str, **match: Any) -> FailingCall:
        """The first data call since ``since`` that Salesforce refused (fields in ``match``)."""
        for r in self.data_calls(since=since):
            if r["status"] >= 400 and all(r.get(k) == v for k, v in match.items()):
                return FailingCall(r["method"], r["path"], r["status"], r["errorCode"], by)
        raise StepFailed("no refused data call in the emulator's request log")

    def advance(self, seconds: float) -> None:
        """Move the shared clock (the emulator's and the gateway's) forward."""
        self.emu.admin.advance_clock(seconds)

    async def call(
        self, connection_id: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """One proxied call: ``/c/<connection id>/services/data/<version>/<path>``."""
        return await self.http.request(method, f"/c/{connection_id}{DATA}/{path}", **kwargs)

    async def query(self, connection_id: str) -> httpx.Response:
        return await self.call(connection_id, "GET", "query", params={"q": QUERY})

    async def create(self, connection_id: str, name: str) -> httpx.Response:
        return await self.call(connection_id, "POST", "sobjects/Account", json={"Name": name})

    async def connection(self, connection_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/connections/{connection_id}")
        expect(answer.status_code == 200, f"GET /connections/{connection_id}", answer)
        doc: dict[str, Any] = answer.json()
        return doc

    async def logged_verdict(self, connection_id: str) -> Verdict:
        """The connection's newest ``diagnosis`` row of the operation log, and its status."""
        where = f"GET /logs?kind=diagnosis&connection_id={connection_id}"
        answer = await self.http.get(
            "/logs", params={"kind": "diagnosis", "connection_id": connection_id, "limit": 1}
        )
        expect(answer.status_code == 200, where, answer)
        rows = answer.json().get("data", [])
        expect(bool(rows), f"no diagnosis of {connection_id} in the operation log")
        detail = rows[0].get("detail", {})
        status = (await self.connection(connection_id)).get("status", "?")
        return _verdict(rows[0].get("cause"), detail, status, where)

    async def asked_verdict(self, connection_id: str, route: str, **kwargs: Any) -> Verdict:
        """``POST /connections/{id}/<route>`` (``diagnose`` or ``report``) as a verdict."""
        where = f"POST /connections/{connection_id}/{route}"
        answer = await self.http.post(f"/connections/{connection_id}/{route}", **kwargs)
        expect(answer.status_code == 200, where, answer)
        doc = answer.json()
        return _verdict(doc.get("cause"), doc, str(doc.get("status")), where)

    async def write_pause_settled(self, org_id: str, *, paused: bool) -> None:
        """Wait (bounded, usually a few ms) until the org's write pause is ``paused`` in the
        gateway's database (``GET /orgs/{id}``).

        The gateway answers the write that started (or ended) the pause before that change
        is committed, and the next step's diagnosis reads the database. A background poll
        can no longer undo the change (``orgs/shared_pause.py`` keeps a local change newer
        than the read it polls), so no extra wait is needed once the database has it.
        """
        for _ in range(250):
            answer = await self.http.get(f"/orgs/{org_id}")
            expect(answer.status_code == 200, f"GET /orgs/{org_id}", answer)
            if answer.json().get("write_pause", {}).get("paused") is paused:
                return
            await asyncio.sleep(0.02)
        raise StepFailed(f"the gateway never recorded writes {'paused' if paused else 'open'}")

    # -- steps --------------------------------------------------------------------------
    async def register(self) -> list[str]:
        env = self.env
        callback = await register_emulator_app(self.emu, env.base_url, env.api_key, INTEGRATION)
        return [
            f'integration "{INTEGRATION}" = connected app {self.emu.apps[0].name} '
            f"(login {self.emu.login_url}, callback {callback})"
        ]

    async def connect_all(self) -> list[str]:
        lines = []
        for connection_id in self.index:
            org = self.org(connection_id)
            user = org.users[0]
            await self._connect(connection_id, user.username, user.password)
            doc = await self.connection(connection_id)
            expect(doc.get("status") == "active", f"{connection_id} is {doc.get('status')}")
            expect(
                (doc.get("org_id") or "")[:15] == org.org_id[:15]
                and doc.get("username") == user.username,
                f"{connection_id} is {doc.get('username')} of org {doc.get('org_id')}, "
                f"not {user.username} of {org.org_id}",
            )
            lines.append(
                f"{connection_id}: {user.username} logged in and approved → "
                f"active, org {org.org_id}"
            )
        lines.append(
            "POST /connect/sessions → connect link → Salesforce login + approval → "
            "/oauth/callback (state + PKCE)"
        )
        return lines

    async def _connect(self, connection_id: str, username: str, password: str) -> None:
        """The hosted connect flow, with an HTTP client playing the customer's browser."""
        env = self.env
        try:
            await connect_through_flow(
                env.base_url,
                env.api_key,
                INTEGRATION,
                connection_id,
                username=username,
                password=password,
                verify=env.verify,
                read_timeout_seconds=HTTP_TIMEOUT,
            )
        except ConnectFlowError as exc:
            raise StepFailed(str(exc)) from exc

    async def traffic(self) -> list[str]:
        calls, lines = 0, []
        for connection_id in self.index:
            sizes = []
            for _ in range(3):
                answer = await self.query(connection_id)
                expect(answer.status_code == 200, f"query through {connection_id}", answer)
                sizes.append(len(answer.json()["records"]))
                calls += 1
            created = await self.create(connection_id, f"Demo Account ({connection_id})")
            expect(created.status_code == 201, f"create through {connection_id}", created)
            expect(created.json().get("success") is True, "create did not succeed", created)
            calls += 1
            lines.append(
                f"{connection_id}: 3 x GET …/query?q={QUERY} → 200 ({sizes[0]} accounts each); "
                "POST …/sobjects/Account → 201"
            )
        lines.append(
            f"{calls} calls to {self.env.base_url}/c/<connection id>{DATA}/…, "
            "with the API key as the bearer token"
        )
        return lines

    async def renewal(self) -> list[str]:
        timeout = float(self.org("acme").session_timeout_seconds)
        before = self.grants()
        since = self.now()
        self.advance(timeout + 60)
        ids = [cid for cid in self.index for _ in range(_BURST)]
        answers = await asyncio.gather(*(self.query(cid) for cid in ids))
        ok = sum(a.status_code == 200 for a in answers)
        named = {a.headers.get("tokenkeep-cause") for a in answers} - {None}
        per_org = [self.grants(org_id=self.org(cid).org_id) for cid in self.index]
        refused = [r for r in self.data_calls(since=since) if r["status"] >= 400]
        expect(ok == len(ids), f"only {ok} of {len(ids)} calls succeeded after the timeout")
        expect(
            self.grants() - before == len(self.index),
            f"{self.grants() - before} refresh grants instead of one per connection",
        )
        expect(not refused, f"{len(refused)} calls were refused by Salesforce")
        expect(not named, f"Tokenkeep-Cause {sorted(map(str, named))} on a renewed session")
        return [
            f"the clock moved {duration(timeout + 60)} (the orgs' session timeout is "
            f"{duration(timeout)}): every token has expired",
            f"{len(ids)} concurrent calls ({_BURST} per connection) → {ok} x 200; exactly one "
            f"refresh grant per connection ({sum(per_org)} in the emulator's log), "
            "none refused: tokenkeep renewed each session before using it, once",
        ]


def _verdict(cause: Any, doc: dict[str, Any], status: str, where: str) -> Verdict:
    """A verdict from a diagnosis document (``/diagnose``, ``/report`` or a log row's detail).

    Up to three evidence lines, the telling ones: the refused answer is printed above as
    the failing call, and a token's age or a refresh that worked tell no cause apart.
    """
    says = [
        str(e.get("says"))
        for e in doc.get("evidence", [])
        if isinstance(e, dict)
        and e.get("says")
        and e.get("name") not in _UNTELLING
        and (e.get("name"), e.get("value")) != ("refresh", "ok")
    ]
    return Verdict(
        cause=str(cause) if cause is not None else None,
        confidence=str(doc.get("confidence", "?")),
        evidence=says[-3:],
        fix=str(doc.get("fix", "")),
        status=status,
        where=where,
    )
