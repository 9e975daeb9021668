"""Helpers for the proxy's end-to-end tests: a real uvicorn, the emulator, an echo upstream.

``EmulatorTokens`` is a small test implementation of the proxy's ``TokenSource`` protocol
that gets real tokens from the emulator (authorization code) and refreshes them at the
emulator's token endpoint, single-flight per connection (the real one is the lifecycle's
refresh coordinator).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from aiohttp import web

from tokenkeep.clock import Clock, SystemClock
from tokenkeep.config import Settings, load_settings
from tokenkeep.diagnosis.classify import classify
from tokenkeep.diagnosis.service import ProxiedFailure, Verdict, evidence_of
from tokenkeep.emulator import Emulator
from tokenkeep.errors import ActionRequiredError, NeedsReauthError, NotFoundError
from tokenkeep.proxy.app import ProxyApp
from tokenkeep.proxy.source import FreshToken
from tokenkeep.secret import Secret

API_KEY = "tk_test_proxy_key_0123456789abcdef"
REDIRECT_URI = "http://localhost/callback"


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app with a real uvicorn on a free loopback port; yields its base URL."""
    sock = _listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        access_log=False,
        http="httptools",
        server_header=False,
        date_header=False,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@dataclass
class _Conn:
    token: FreshToken
    refresh_token: str | None
    needs_reauth: bool = False
    action_required: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class EmulatorTokens:
    """A ``TokenSource`` over the emulator's OAuth endpoints (test fake of the interface)."""

    def __init__(self, emu: Emulator | None = None, *, ssl_context: Any = None) -> None:
        self.emu = emu
        self._ssl = ssl_context
        self.conns: dict[str, _Conn] = {}
        self.refresh_calls: list[tuple[str, int]] = []  # (connection, rejected version)
        self.refreshes = 0
        self.causes: list[tuple[str, str, dict[str, Any]]] = []
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl) if self._ssl else None
            self._http = aiohttp.ClientSession(connector=connector)
        return self._http

    def add_static(
        self, connection_id: str, instance_url: str, token: str, org_id: str | None = None
    ) -> None:
        """A connection with a fixed token (for the echo upstream)."""
        self.conns[connection_id] = _Conn(
            FreshToken(connection_id, org_id, instance_url, Secret(token), 1), None
        )

    async def connect(self, connection_id: str, user_index: int = 0, org_index: int = 0) -> None:
        """Run the authorization-code grant for a user of the emulator."""
        assert self.emu is not None
        app = self.emu.apps[0]
        user = self.emu.orgs[org_index].users[user_index]
        code = self.emu.admin.authorize(
            {"client_id": app.client_id, "username": user.username, "redirect_uri": REDIRECT_URI}
        )["code"]
        body = await self._token_call(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "redirect_uri": REDIRECT_URI,
            }
        )
        org_id = body["id"].rstrip("/").split("/")[-2]
        token = FreshToken(
            connection_id, org_id, body["instance_url"], Secret(body["access_token"]), 1
        )
        self.conns[connection_id] = _Conn(token, body["refresh_token"])

    async def _token_call(self, form: dict[str, str]) -> dict[str, Any]:
        assert self.emu is not None
        async with self._session().post(
            self.emu.login_url + "/services/oauth2/token", data=form
        ) as resp:
            body: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != 200:
                raise NeedsReauthError(f"refresh failed: {body.get('error')}")
            return body

    async def token_for(self, connection_id: str) -> FreshToken:
        conn = self.conns.get(connection_id)
        if conn is None:
            raise NotFoundError(f"No connection {connection_id!r}.")
        if conn.needs_reauth:
            raise NeedsReauthError("The connection must be re-authorized.")
        if conn.action_required:
            raise ActionRequiredError(
                "An org admin must change a setting.", details={"cause": "ip_locked"}
            )
        return conn.token

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        self.refresh_calls.append((connection_id, rejected_version))
        conn = self.conns[connection_id]
        async with conn.lock:
            if conn.token.version > rejected_version:
                return conn.token
            if conn.refresh_token is None or self.emu is None:
                raise NeedsReauthError("No refresh token.")
            app = self.emu.apps[0]
            self.refreshes += 1
            try:
                body = await self._token_call(
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": conn.refresh_token,
                        "client_id": app.client_id,
                        "client_secret": app.client_secret,
                    }
                )
            except NeedsReauthError:
                conn.needs_reauth = True
                raise
            old = conn.token
            conn.token = FreshToken(
                connection_id,
                old.org_id,
                body["instance_url"],
                Secret(body["access_token"]),
                old.version + 1,
            )
            conn.refresh_token = body.get("refresh_token", conn.refresh_token)
            return conn.token

    async def settle(self, failure: ProxiedFailure) -> Verdict:
        """The real classifier on what the proxy saw (no probes, nothing stored)."""
        diagnosis = classify(evidence_of(failure))
        self.causes.append((failure.connection_id, diagnosis.cause, diagnosis.as_dict()))
        return Verdict(diagnosis.cause, diagnosis)


async def allow_test_key(key: str) -> bool:
    """The ``authenticate`` callback: one valid API key."""
    return key == API_KEY


def proxy_settings(**overrides: Any) -> Settings:
    return load_settings(
        data_dir=Path(tempfile.gettempdir()) / "tokenkeep-proxy-tests",
        write_pause_probe_seconds=30.0,
        allow_insecure_loopback=True,  # the emulator serves plain http on 127.0.0.1
        **overrides,
    )


@contextlib.asynccontextmanager
async def running_proxy(
    tokens: Any,
    *,
    clock: Clock | None = None,
    events: list[tuple[str, str, dict[str, Any]]] | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[str, ProxyApp]]:
    """A ProxyApp under a real uvicorn; yields (base URL, app)."""

    async def on_event(event_type: str, org_id: str, payload: dict[str, Any]) -> None:
        if events is not None:
            events.append((event_type, org_id, payload))

    app = ProxyApp(
        tokens,
        allow_test_key,
        proxy_settings(**settings),
        clock or SystemClock(),
        on_event=on_event,
    )
    await app.start()
    try:
        async with serve(app) as url:
            yield url, app
    finally:
        await app.stop()


@dataclass
class Seen:
    """One request the echo upstream received."""

    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body_bytes: int


class EchoUpstream:
    """A tiny upstream that records every request (headers, body size) and answers JSON.

    ``script`` is a list of (status, body, headers) answered in order (the last one repeats).
    The body is read in chunks and only counted, never held.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: list[tuple[int, bytes, dict[str, str]]] = [
            (200, b'{"ok":true}', {"Sforce-Limit-Info": "api-usage=18/15000"})
        ]
        self.response_bytes = 0  # when set, answer a body of this size in 64 KiB chunks
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
        self.seen.append(Seen(request.method, request.path_qs, list(request.headers.items()), size))
        if self.response_bytes:
            resp = web.StreamResponse(status=200, headers={"Content-Type": "text/csv"})
            resp.content_length = self.response_bytes
            await resp.prepare(request)
            block = b"x" * 65536
            left = self.response_bytes
            while left > 0:
                await resp.write(block[: min(left, len(block))])
                left -= min(left, len(block))
            await resp.write_eof()
            return resp
        status, body, headers = self.script[min(len(self.seen) - 1, len(self.script) - 1)]
        return web.Response(
            status=status, body=body, headers={"Content-Type": "application/json", **headers}
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[EchoUpstream]:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = _listen()
        site = web.SockSite(runner, sock)
        await site.start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        try:
            yield self
        finally:
            await runner.cleanup()
