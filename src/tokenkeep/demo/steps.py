"""The tour's steps: each one produces a situation with the emulator's admin API and checks it.

:class:`Tour` talks to the gateway over HTTP only, the way an app would (one client with the
API key), and to the emulator's admin API as the orgs' admins would. Each step returns the
lines printed under its ✓, or raises :class:`StepFailed` with what it saw instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx

from tokenkeep.harness import (
    ConnectFlowError,
    GatewayUnderTest,
    connect_through_flow,
    register_emulator_app,
)

__all__ = [
    "API_VERSION",
    "HTTP_TIMEOUT",
    "INTEGRATION",
    "StepFailed",
    "StepResult",
    "Tour",
    "TourResult",
    "expect",
]

#: The integration key the tour registers for the emulator's connected app.
INTEGRATION = "salesforce"
API_VERSION = "v60.0"
QUERY = "SELECT Id, Name FROM Account LIMIT 5"
#: The connections the tour creates: (connection id, emulator org index).
CONNECTIONS: tuple[tuple[str, int], ...] = (("acme", 0), ("globex", 1))
_BURST = 10  # concurrent calls right after the session timeout
HTTP_TIMEOUT = 15.0


class StepFailed(Exception):
    """A tour step saw something other than what it shows (the message says what)."""


@dataclass
class StepResult:
    """One numbered step of the tour: its title, verdict and the lines printed under it."""

    number: int
    title: str
    ok: bool
    lines: list[str] = field(default_factory=list)


@dataclass
class TourResult:
    """All steps; ``ok`` when every step that ran succeeded and none was skipped."""

    steps: list[StepResult]
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.skipped


class Tour:
    """The steps, sharing one HTTP client (the app's view) and the emulator (the org's)."""

    def __init__(self, env: GatewayUnderTest, http: httpx.AsyncClient) -> None:
        self.env = env
        self.emu = env.emulator
        self.http = http
        self.orgs: dict[str, Any] = {cid: self.emu.orgs[i] for cid, i in CONNECTIONS}

    # -- helpers ------------------------------------------------------------------------
    def grants(self, grant_type: str = "refresh_token", org_id: str | None = None) -> int:
        """Token-endpoint calls with ``grant_type`` in the emulator's log (optionally one org)."""
        return self.env.grants(grant_type, org_id=org_id)

    def data_calls(self, org_id: str) -> int:
        """REST data API calls the emulator has seen for ``org_id``."""
        return len(self.emu.admin.requests(org_id=org_id, path="/services/data"))

    def advance(self, seconds: float) -> None:
        """Move the shared clock (the emulator's and the gateway's) forward."""
        self.emu.admin.advance_clock(seconds)

    async def call(
        self, connection_id: str, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        """One proxied call: ``/c/<connection id>/services/data/<version>/<path>``."""
        url = f"/c/{connection_id}/services/data/{API_VERSION}/{path}"
        return await self.http.request(method, url, **kwargs)

    async def query(self, connection_id: str) -> httpx.Response:
        return await self.call(connection_id, "GET", "query", params={"q": QUERY})

    async def create(self, connection_id: str, name: str) -> httpx.Response:
        return await self.call(connection_id, "POST", "sobjects/Account", json={"Name": name})

    async def connection(self, connection_id: str) -> dict[str, Any]:
        answer = await self.http.get(f"/connections/{connection_id}")
        expect(answer.status_code == 200, f"GET /connections/{connection_id}", answer)
        doc: dict[str, Any] = answer.json()
        return doc

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
        for connection_id, org in self.orgs.items():
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
        for connection_id in self.orgs:
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
                f"POST …/sobjects/Account → 201 {created.json()['id']}"
            )
        lines.append(
            f"{calls} calls to {self.env.base_url}/c/<connection id>/services/data/"
            f"{API_VERSION}/…, with the API key as the bearer token"
        )
        return lines

    async def expiry(self) -> list[str]:
        org = self.orgs["acme"]
        timeout = float(org.session_timeout_seconds)
        before = self.grants(org_id=org.org_id)
        self.advance(timeout + 60)
        answers = await asyncio.gather(*(self.query("acme") for _ in range(_BURST)))
        ok = sum(a.status_code == 200 for a in answers)
        refreshes = self.grants(org_id=org.org_id) - before
        expect(ok == _BURST, f"only {ok} of {_BURST} calls succeeded after the timeout")
        expect(refreshes == 1, f"{refreshes} refresh grants instead of exactly one")
        return [
            f"the clock moved {_duration(timeout + 60)} (the org's session timeout is "
            f"{_duration(timeout)}): every token has expired",
            f"{_BURST} concurrent calls through acme → {ok} x 200; "
            f"exactly {refreshes} refresh grant in the emulator's log",
        ]

    async def early_death(self) -> list[str]:
        org = self.orgs["acme"]
        self.emu.admin.patch_org(org.org_id, session_timeout_seconds=900)
        self.advance(16 * 60)
        before = self.grants(org_id=org.org_id)
        calls_before = self.data_calls(org.org_id)
        answer = await self.query("acme")
        refreshes = self.grants(org_id=org.org_id) - before
        upstream = self.data_calls(org.org_id) - calls_before
        expect(answer.status_code == 200, "the call after the early session death", answer)
        expect(refreshes == 1, f"{refreshes} refresh grants instead of exactly one")
        expect(upstream == 2, f"{upstream} calls reached Salesforce instead of 2 (401, replay)")
        return [
            "acme's admin cut the org's session timeout to 15 min; 16 min later the gateway "
            "still holds the old token",
            "next call: Salesforce said 401 INVALID_SESSION_ID → the gateway refreshed and "
            f"replayed once → the app got 200 (1 refresh grant, {upstream} upstream calls)",
        ]

    async def revoked(self) -> list[str]:
        org = self.orgs["acme"]
        user = org.users[0]
        self.emu.admin.set_password(user.username, "Changed-by-the-demo-1")
        before = self.grants()
        first = await self.query("acme")
        attempts = self.grants() - before
        cause = first.headers.get("tokenkeep-cause")
        expect(first.status_code == 401, "the first call after the password change", first)
        expect(cause == "revoked", f"Tokenkeep-Cause is {cause!r}, not 'revoked'", first)
        doc = await self.connection("acme")
        status = f"{doc.get('status')} ({doc.get('status_reason')})"
        expect(doc.get("status") == "needs_reauth", f"acme is {status}")
        calls_before, before_second = self.data_calls(org.org_id), self.grants()
        second = await self.query("acme")
        code = _error_code(second)
        expect(second.status_code == 409 and code == "needs_reauth", "the next call", second)
        expect(
            self.data_calls(org.org_id) == calls_before and self.grants() == before_second,
            "the 409 reached Salesforce",
        )
        expect(attempts == 1, f"{attempts} refresh attempts instead of one")
        return [
            f"{user.username} changed their password: Salesforce revoked every session",
            "next call: Salesforce's 401 passed through with Tokenkeep-Cause: revoked "
            f"after exactly {attempts} refresh attempt (invalid_grant), no refresh loop",
            f"acme is now {status}; the next call got 409 needs_reauth without reaching Salesforce",
        ]

    async def maintenance(self) -> list[str]:
        org = self.orgs["globex"]
        self.emu.admin.patch_org(org.org_id, read_only=True)
        try:
            failed = await self.create("globex", "During maintenance")
            expect(failed.status_code >= 400, "a write during maintenance", failed)
            expect(
                failed.headers.get("tokenkeep-cause") == "maintenance",
                "the maintenance error was not recognised",
                failed,
            )
            calls_before = self.data_calls(org.org_id)
            paused = await self.create("globex", "During maintenance, again")
            code = _error_code(paused)
            expect(paused.status_code == 503 and code == "org_write_paused", "next write", paused)
            expect(self.data_calls(org.org_id) == calls_before, "the paused write went upstream")
            read = await self.query("globex")
            expect(read.status_code == 200, "a read during maintenance", read)
        finally:
            self.emu.admin.patch_org(org.org_id, read_only=False)
        probe_after = float(self.env.gateway.settings.write_pause_probe_seconds)
        self.advance(probe_after + 1)
        resumed = await self.create("globex", "After maintenance")
        expect(resumed.status_code == 201, "the probe write after maintenance", resumed)
        return [
            f"globex went read-only: a write got Salesforce's {failed.status_code} "
            "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE (Tokenkeep-Cause: maintenance)",
            f"the gateway paused writes to that org: the next write got 503 org_write_paused "
            f"(Retry-After: {paused.headers.get('retry-after', '?')}) without reaching "
            "Salesforce; reads still got 200",
            f"maintenance ended; {_duration(probe_after)} later one probe write went through "
            "(201) and writes resumed",
        ]

    async def api_client_control(self) -> list[str]:
        org = self.orgs["globex"]
        self.emu.admin.patch_org(org.org_id, api_client_control=True, allowed_client_ids=[])
        try:
            before = self.grants(org_id=org.org_id)
            answer = await self.query("globex")
            refreshes = self.grants(org_id=org.org_id) - before
            cause = answer.headers.get("tokenkeep-cause")
            expect(answer.status_code == 401, "a call under API Client Control", answer)
            expect(cause is not None, "no Tokenkeep-Cause on the failed call", answer)
            expect(refreshes == 0, f"{refreshes} refresh grants spent on a refresh-proof 401")
            lines = [
                "globex's admin allowed only allow-listed connected apps (API Client Control)",
                "next call: 401 'This session is not valid for use with the REST API' passed "
                f"through with Tokenkeep-Cause: {cause}; no refresh wasted on it",
            ]
            if cause == "unknown":
                lines.append(
                    "(the proxy does not guess among the causes a refresh cannot fix; "
                    "diagnosis tells them apart)"
                )
            diagnosis = await self.http.post("/connections/globex/diagnose")
            if diagnosis.status_code == 200:  # a gateway with a diagnosis endpoint says more
                doc = diagnosis.json()
                lines.append(f"diagnose: {doc.get('cause')} — {doc.get('fix')}")
        finally:
            self.emu.admin.patch_org(org.org_id, api_client_control=False)
        return lines


def expect(condition: bool, what: str, response: httpx.Response | None = None) -> None:
    """Fail the step with ``what`` (plus the response's status and error code) unless true."""
    if condition:
        return
    if response is not None:
        code = _error_code(response)
        what += f": HTTP {response.status_code}" + (f" {code}" if code else "")
    raise StepFailed(what)


def _error_code(response: httpx.Response) -> str | None:
    """Our ``{"error": {"code"}}`` or Salesforce's ``[{"errorCode"}]``, if the body has one."""
    try:
        doc = response.json()
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return str(doc["error"].get("code"))
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return str(doc[0].get("errorCode"))
    return None


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:g} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
