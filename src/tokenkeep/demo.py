"""``tokenkeep demo``: a guided tour of the gateway against the Salesforce org emulator.

Everything runs in one process on loopback, on a fresh temporary SQLite data dir:

* the org emulator (2 orgs, one connected app) and the real gateway (the same
  :class:`~tokenkeep.runtime.Gateway` and :func:`~tokenkeep.server.build_asgi_app` that
  ``tokenkeep serve`` runs) share one :class:`~tokenkeep.clock.OffsetClock`, so "two hours
  pass" moves both sides together, as time does in real life;
* the tour then talks to the gateway over HTTP only, the way an app would: it registers the
  emulator's connected app, connects both orgs through the hosted connect flow (the
  emulator's HTML login and approval pages are posted by an HTTP client), sends proxied
  calls through ``/c/<connection id>/...``, and produces the causes of
  ``INVALID_SESSION_ID`` one by one with the emulator's admin API: an expired session, a
  session that dies earlier than expected, a password change, maintenance, and API Client
  Control.

Each step checks what a user would check (statuses, the emulator's token-endpoint log,
the connection's status) and prints one ✓ or ✗ line. Nothing secret is printed: no token,
no client secret, no password; the API key once, at the end, as the demo's ready key.

:func:`run_demo` is what the CLI calls; :func:`demo_environment` and :func:`run_tour` are
the pieces (tests drive them in-process).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tokenkeep.clock import OffsetClock
from tokenkeep.config import load_settings
from tokenkeep.errors import TokenkeepError
from tokenkeep.observability.logging import configure_logging
from tokenkeep.secret import Secret

__all__ = [
    "DEFAULT_PORT",
    "DemoEnvironment",
    "StepResult",
    "TourResult",
    "demo_environment",
    "run_demo",
    "run_tour",
]

#: The gateway's usual port; the demo takes another free port when it is busy.
DEFAULT_PORT = 8400
#: The integration key the tour registers for the emulator's connected app.
INTEGRATION = "salesforce"
API_VERSION = "v60.0"
QUERY = "SELECT Id, Name FROM Account LIMIT 5"
#: The connections the tour creates: (connection id, emulator org index).
CONNECTIONS: tuple[tuple[str, int], ...] = (("acme", 0), ("globex", 1))
_BURST = 10  # concurrent calls right after the session timeout
_HTTP_TIMEOUT = 15.0
_HIDDEN_INPUT = re.compile(
    r'<input type="hidden" name="(?P<name>[^"]*)" value="(?P<value>[^"]*)">', re.IGNORECASE
)


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


@dataclass
class DemoEnvironment:
    """What a running demo is made of (see :func:`demo_environment`)."""

    emulator: Any  # tokenkeep.emulator.Emulator (imported lazily: the CLI starts fast)
    gateway: Any  # tokenkeep.runtime.Gateway
    server: Any  # tokenkeep.server.ServerHandle
    clock: OffsetClock
    gateway_url: str
    api_key: Secret
    data_dir: Path


# -- the environment ------------------------------------------------------------------------
def _pick_port(port: int | None) -> tuple[int, str | None]:
    """The port to listen on, and a note when the wanted one was busy."""
    from tokenkeep.server import check_port_free, free_port

    if not port:
        return free_port(), None
    try:
        check_port_free("127.0.0.1", port)
    except TokenkeepError:
        chosen = free_port()
        return chosen, f"port {port} is busy; using port {chosen} instead"
    return port, None


@contextlib.asynccontextmanager
async def demo_environment(
    data_dir: Path, *, port: int, orgs: int = 2
) -> AsyncIterator[DemoEnvironment]:
    """Start the emulator and a gateway (SQLite in ``data_dir``) sharing one clock.

    ``port`` must be free (see :func:`_pick_port`). The gateway trusts loopback ``http://``
    (``allow_insecure_loopback``), ignores any ``TOKENKEEP_*`` secret or database settings of
    the environment, and runs without the proactive scheduler: the tour counts refresh
    grants, and a refresh at a moment of the scheduler's own choosing would blur the count.
    """
    from tokenkeep.emulator import Emulator
    from tokenkeep.runtime import Gateway
    from tokenkeep.server import ServerHandle, build_asgi_app

    clock = OffsetClock()
    gateway_url = f"http://127.0.0.1:{port}"
    settings = load_settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir / 'tokenkeep.db'}",
        host="127.0.0.1",
        port=port,
        public_url=gateway_url,
        secret_key=None,
        encryption_keys=None,
        allow_insecure_loopback=True,
        scheduler_enabled=False,
        ca_bundle=None,
        egress_address=None,
        webhook_url=None,
    )
    async with Emulator.running(orgs=orgs, clock=clock) as emu:
        gateway = Gateway(settings, clock=clock)
        # Built before the start: the proxy registers its services with the gateway.
        asgi_app = build_asgi_app(gateway)
        # Started here (the server's lifespan start is then a no-op) to get the new API key.
        api_key = await gateway.start()
        try:
            if api_key is None:  # a fresh data dir always gets one; be explicit if not
                raise TokenkeepError("the demo gateway did not create an API key.")
            server = ServerHandle(asgi_app, host="127.0.0.1", port=port)
            url = await server.start()
            try:
                yield DemoEnvironment(
                    emulator=emu,
                    gateway=gateway,
                    server=server,
                    clock=clock,
                    gateway_url=url,
                    api_key=api_key,
                    data_dir=data_dir,
                )
            finally:
                await server.stop()
        finally:
            await gateway.stop()


# -- the tour --------------------------------------------------------------------------------
class _Tour:
    """The steps, sharing one HTTP client (the app's view) and the emulator (the org's)."""

    def __init__(self, env: DemoEnvironment, http: httpx.AsyncClient, console: Console) -> None:
        self.env = env
        self.emu = env.emulator
        self.http = http
        self.console = console
        self.orgs: dict[str, Any] = {cid: self.emu.orgs[i] for cid, i in CONNECTIONS}

    # -- helpers ------------------------------------------------------------------------
    def grants(self, grant_type: str = "refresh_token", org_id: str | None = None) -> int:
        """Token-endpoint calls with ``grant_type`` in the emulator's log (optionally one org)."""
        return len(
            self.emu.admin.requests(
                grant_type=grant_type, org_id=org_id, path="/services/oauth2/token"
            )
        )

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
        _expect(answer.status_code == 200, f"GET /connections/{connection_id}", answer)
        doc: dict[str, Any] = answer.json()
        return doc

    # -- steps --------------------------------------------------------------------------
    async def register(self) -> list[str]:
        app = self.emu.apps[0]
        callback = f"{self.env.gateway_url}/oauth/callback"
        # What an admin does once in Salesforce Setup: allow the gateway's callback URL.
        self.emu.admin.patch_app(app.client_id, redirect_uris=[*app.redirect_uris, callback])
        answer = await self.http.put(
            f"/integrations/{INTEGRATION}",
            json={
                "provider": "salesforce",
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "login_url": self.emu.login_url,
                "scopes": ["api", "refresh_token"],
                "session_timeout_seconds": int(self.emu.orgs[0].session_timeout_seconds),
            },
        )
        _expect(answer.status_code in (200, 201), f"PUT /integrations/{INTEGRATION}", answer)
        return [
            f'integration "{INTEGRATION}" = connected app {app.name} '
            f"(login {self.emu.login_url}, callback {callback})"
        ]

    async def connect_all(self) -> list[str]:
        lines = []
        for connection_id, org in self.orgs.items():
            user = org.users[0]
            await self._connect(connection_id, user.username, user.password)
            doc = await self.connection(connection_id)
            _expect(doc.get("status") == "active", f"{connection_id} is {doc.get('status')}")
            _expect(
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
        answer = await self.http.post(
            "/connect/sessions", json={"integration": INTEGRATION, "connection_id": connection_id}
        )
        _expect(answer.status_code in (200, 201), "POST /connect/sessions", answer)
        link = urljoin(self.env.gateway_url, answer.json()["url"])
        # A fresh "browser" (no API key, its own cookies): the customer's side.
        async with httpx.AsyncClient(timeout=_HTTP_TIMEOUT) as browser:
            page = await browser.get(link)
            _expect(page.is_redirect, f"the connect link answered {page.status_code}", page)
            authorize_url = urljoin(link, page.headers["location"])
            query = parse_qs(urlsplit(authorize_url).query)
            _expect(
                query.get("code_challenge_method") == ["S256"] and bool(query.get("state")),
                "the authorize URL carries no PKCE challenge or state",
            )
            page = await browser.get(authorize_url)
            # Login page, then the approval page (or straight back if already approved).
            for action in ("login", "approve"):
                if page.is_redirect:
                    break
                _expect(page.status_code == 200, f"the Salesforce {action} page", page)
                form = _hidden_fields(page.text)
                if action == "login":
                    form.update(username=username, password=password)
                else:
                    form["decision"] = "allow"
                page = await browser.post(
                    urljoin(authorize_url, _form_action(page.text)), data=form
                )
            _expect(page.is_redirect, "Salesforce did not send the browser back", page)
            callback = urljoin(authorize_url, page.headers["location"])
            _expect("code=" in callback, "Salesforce sent the browser back without a code")
            done = await browser.get(callback)
            _expect(
                done.status_code < 400,
                f"the gateway's /oauth/callback answered {done.status_code}",
                done,
            )

    async def traffic(self) -> list[str]:
        calls, lines = 0, []
        for connection_id in self.orgs:
            sizes = []
            for _ in range(3):
                answer = await self.query(connection_id)
                _expect(answer.status_code == 200, f"query through {connection_id}", answer)
                sizes.append(len(answer.json()["records"]))
                calls += 1
            created = await self.create(connection_id, f"Demo Account ({connection_id})")
            _expect(created.status_code == 201, f"create through {connection_id}", created)
            _expect(created.json().get("success") is True, "create did not succeed", created)
            calls += 1
            lines.append(
                f"{connection_id}: 3 x GET …/query?q={QUERY} → 200 ({sizes[0]} accounts each); "
                f"POST …/sobjects/Account → 201 {created.json()['id']}"
            )
        lines.append(
            f"{calls} calls to {self.env.gateway_url}/c/<connection id>/services/data/"
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
        _expect(ok == _BURST, f"only {ok} of {_BURST} calls succeeded after the timeout")
        _expect(refreshes == 1, f"{refreshes} refresh grants instead of exactly one")
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
        _expect(answer.status_code == 200, "the call after the early session death", answer)
        _expect(refreshes == 1, f"{refreshes} refresh grants instead of exactly one")
        _expect(upstream == 2, f"{upstream} calls reached Salesforce instead of 2 (401, replay)")
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
        _expect(first.status_code == 401, "the first call after the password change", first)
        _expect(cause == "revoked", f"Tokenkeep-Cause is {cause!r}, not 'revoked'", first)
        doc = await self.connection("acme")
        status = f"{doc.get('status')} ({doc.get('status_reason')})"
        _expect(doc.get("status") == "needs_reauth", f"acme is {status}")
        calls_before, before_second = self.data_calls(org.org_id), self.grants()
        second = await self.query("acme")
        code = _error_code(second)
        _expect(second.status_code == 409 and code == "needs_reauth", "the next call", second)
        _expect(
            self.data_calls(org.org_id) == calls_before and self.grants() == before_second,
            "the 409 reached Salesforce",
        )
        _expect(attempts == 1, f"{attempts} refresh attempts instead of one")
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
            _expect(failed.status_code >= 400, "a write during maintenance", failed)
            _expect(
                failed.headers.get("tokenkeep-cause") == "maintenance",
                "the maintenance error was not recognised",
                failed,
            )
            calls_before = self.data_calls(org.org_id)
            paused = await self.create("globex", "During maintenance, again")
            code = _error_code(paused)
            _expect(paused.status_code == 503 and code == "org_write_paused", "next write", paused)
            _expect(self.data_calls(org.org_id) == calls_before, "the paused write went upstream")
            read = await self.query("globex")
            _expect(read.status_code == 200, "a read during maintenance", read)
        finally:
            self.emu.admin.patch_org(org.org_id, read_only=False)
        probe_after = float(self.env.gateway.settings.write_pause_probe_seconds)
        self.advance(probe_after + 1)
        resumed = await self.create("globex", "After maintenance")
        _expect(resumed.status_code == 201, "the probe write after maintenance", resumed)
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
            _expect(answer.status_code == 401, "a call under API Client Control", answer)
            _expect(cause is not None, "no Tokenkeep-Cause on the failed call", answer)
            _expect(refreshes == 0, f"{refreshes} refresh grants spent on a refresh-proof 401")
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
            if diagnosis.status_code == 200:  # the diagnosis endpoint (a later step) is there
                doc = diagnosis.json()
                lines.append(f"diagnose: {doc.get('cause')} — {doc.get('fix')}")
        finally:
            self.emu.admin.patch_org(org.org_id, api_client_control=False)
        return lines


def _expect(condition: bool, what: str, response: httpx.Response | None = None) -> None:
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


def _hidden_fields(page: str) -> dict[str, str]:
    return {
        html.unescape(m["name"]): html.unescape(m["value"]) for m in _HIDDEN_INPUT.finditer(page)
    }


def _form_action(page: str) -> str:
    match = re.search(r'<form method="post" action="([^"]+)"', page)
    if match is None:
        raise StepFailed("the Salesforce page has no form")
    return html.unescape(match.group(1))


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:g} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


_Step = tuple[str, Callable[[], Awaitable[list[str]]], bool]


async def run_tour(env: DemoEnvironment, console: Console) -> TourResult:
    """Run every step against ``env``, printing each as it ends; never raises for a failed step.

    A failed step that later steps depend on (registration, connecting) ends the tour; the
    rest are listed as skipped.
    """
    result = TourResult(steps=[])
    headers = {"Authorization": f"Bearer {env.api_key.reveal()}"}
    async with httpx.AsyncClient(
        base_url=env.gateway_url, headers=headers, timeout=_HTTP_TIMEOUT
    ) as http:
        tour = _Tour(env, http, console)
        steps: list[_Step] = [
            ("Register the connected app", tour.register, True),
            ("Connect two orgs through the hosted connect flow", tour.connect_all, True),
            ("Send proxied calls", tour.traffic, False),
            ("Two hours pass: sessions expire (cause: expired)", tour.expiry, False),
            ("A session dies earlier than expected (cause: expired)", tour.early_death, False),
            ("A user changes their password (cause: revoked)", tour.revoked, False),
            ("An org goes into maintenance (cause: maintenance)", tour.maintenance, False),
            (
                "An org turns on API Client Control (cause: api_client_control)",
                tour.api_client_control,
                False,
            ),
        ]
        for index, (title, run, required) in enumerate(steps, start=1):
            step = StepResult(index, title, ok=False)
            try:
                step.lines = await run()
                step.ok = True
            except StepFailed as exc:
                step.lines = [str(exc)]
            except Exception as exc:  # a demo shows ✗ and goes on, never a traceback
                step.lines = [f"{type(exc).__name__}: {exc}"]
            result.steps.append(step)
            _print_step(console, step)
            if required and not step.ok:
                result.skipped = [t for t, _, _ in steps[index:]]
                console.print(f"   skipped: {', '.join(result.skipped)}")
                break
        with contextlib.suppress(Exception):  # the table is a bonus; the steps said it all
            console.print(await _connections_table(tour))
    return result


def _print_step(console: Console, step: StepResult) -> None:
    mark = "[bold green]✓[/]" if step.ok else "[bold red]✗[/]"
    console.print(f"{mark} {step.number}. [bold]{escape(step.title)}[/]")
    for line in step.lines:
        console.print(f"     {escape(line)}")


async def _connections_table(tour: _Tour) -> Table:
    answer = await tour.http.get("/connections")
    _expect(answer.status_code == 200, "GET /connections", answer)
    table = Table(
        "connection",
        "user",
        "status",
        "refresh grants",
        title="Connections",
        box=box.SIMPLE,
        pad_edge=False,
    )
    for doc in answer.json().get("data", []):
        org_id = doc.get("org_id") or ""
        status = doc.get("status", "?")
        reason = doc.get("status_reason")
        if reason:  # "revoked:expired_or_revoked": the cause word is enough here
            status += f" ({reason.split(':', 1)[0]})"
        table.add_row(
            doc.get("id", "?"),
            doc.get("username") or "-",
            status,
            str(tour.grants(org_id=org_id)) if org_id else "-",
        )
    return table


def _ready_lines(env: DemoEnvironment) -> list[str]:
    """The URLs and the API key: plain lines (a frame would crop long URLs)."""
    url, emu = env.gateway_url, env.emulator
    return [
        f"gateway    {url}  (control API, connect flow, proxy under /c/<connection id>/)",
        f"emulator   login {emu.login_url}  ·  admin API {emu.admin_url}/state",
        *(f"           {o.name}: {o.instance_url}  ({o.org_id})" for o in emu.orgs),
        f"data       {env.data_dir}  (deleted on exit)",
        f"API key    [bold]{env.api_key.reveal()}[/]",
        "",
        "Try it (export TOKENKEEP_API_KEY=<the API key above>):",
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" {url}/connections',
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" '
        f'"{url}/c/globex/services/data/{API_VERSION}/query?q=SELECT+Name+FROM+Account"',
        "  # reconnect acme: open the returned url in a browser (users and passwords:"
        f" curl {emu.admin_url}/state)",
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" -X POST {url}/connect/sessions '
        f"-H 'Content-Type: application/json' "
        f"""-d '{{"integration": "{INTEGRATION}", "connection_id": "acme"}}'""",
    ]


# -- the command -----------------------------------------------------------------------------
async def _first(stop: asyncio.Event, *futures: asyncio.Future[Any]) -> bool:
    """Wait for the first of ``futures`` or ``stop``; True if ``stop`` came first (Ctrl-C).

    The futures are not cancelled here: one of them is the server's own task, which must
    finish its graceful shutdown.
    """
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([waiter, *futures], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    return waiter in done and not any(f in done for f in futures)


async def _demo(console: Console, *, port: int, wait: bool, data_dir: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # While uvicorn serves, it also sees SIGINT/SIGTERM (and shuts the gateway down); these
    # handlers tell the demo to wind up (and see the signals while nothing serves).
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        async with demo_environment(data_dir, port=port) as env:
            console.print(
                f"[bold]tokenkeep demo[/]: the gateway at {env.gateway_url} and a Salesforce "
                f"emulator with {len(env.emulator.orgs)} orgs at {env.emulator.login_url}, "
                f"one process, data in {env.data_dir}\n"
            )
            serving = asyncio.ensure_future(env.server.wait())
            tour = asyncio.ensure_future(run_tour(env, console))
            if await _first(stop, tour, serving) or not tour.done():
                tour.cancel()  # Ctrl-C (or the server ended) during the tour
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await tour
                console.print("interrupted; stopping")
                return 130
            result = tour.result()
            verdict = (
                "[bold green]every step passed[/]"
                if result.ok
                else "[bold red]some steps failed[/] (see ✗ above)"
            )
            console.print(f"\n{verdict}\n")
            console.rule("the demo is ready")
            for line in _ready_lines(env):
                console.print(line)
            if wait:
                console.print("Press Ctrl-C to stop (the temporary data is deleted).")
                await _first(stop, serving)
                console.print("stopping")
            return 0 if result.ok else 1
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def run_demo(console: Console, *, port: int | None = DEFAULT_PORT, wait: bool = True) -> int:
    """``tokenkeep demo``: start everything, run the tour, then (``wait``) serve until Ctrl-C.

    Returns the exit code: 0 when every step passed, 1 when one failed, 130 when
    interrupted during the tour. The temporary data dir is removed in every case.
    """
    # Errors only: the narrative is the output (the lifecycle warns about the revoked
    # session the tour produces on purpose).
    configure_logging("console", "ERROR")
    chosen, note = _pick_port(port)
    if note:
        console.print(note)
    data_dir = Path(tempfile.mkdtemp(prefix="tokenkeep-demo-"))
    try:
        return asyncio.run(_demo(console, port=chosen, wait=wait, data_dir=data_dir))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
