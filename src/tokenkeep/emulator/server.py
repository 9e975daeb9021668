"""Serving the emulator: real sockets, one uvicorn server per host, TLS, and the CLI runner.

Each host (the login host, every org's instance host) is its own listening socket served by
the same ASGI app, which tells hosts apart by the port. Moving an org to a new instance
binds a new socket and starts one more server in the running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn

from tokenkeep.clock import Clock, OffsetClock
from tokenkeep.emulator.admin import Admin
from tokenkeep.emulator.app import EmulatorApp
from tokenkeep.emulator.faults import Faults
from tokenkeep.emulator.keys import TlsFiles, make_tls_files
from tokenkeep.emulator.state import App, EmulatorState, HostBinding, Org, build_fixture

__all__ = ["Emulator", "run_emulator"]

log = logging.getLogger("tokenkeep.emulator")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner (several run at once)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # is TCP; with proto 0, Nagle + delayed ACK add ~40 ms to every response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    # Listening now (not when uvicorn starts) lets clients connect as soon as the URL exists.
    sock.listen(1024)
    sock.setblocking(False)
    return sock


class Emulator:
    """A running Salesforce org emulator (see ``Emulator.running``)."""

    def __init__(
        self,
        *,
        state: EmulatorState,
        faults: Faults,
        host: str,
        scheme: str,
        tls: TlsFiles | None,
        seed: int | None,
    ) -> None:
        self.state = state
        self.faults = faults
        self.host = host
        self.scheme = scheme
        self.tls = tls
        self._records_seed = seed if seed is not None else secrets.randbelow(2**31)
        self.admin = Admin(
            state,
            faults,
            open_host=self._open_host,
            new_records=self._new_records,
            describe=self._urls,
        )
        self.app = EmulatorApp(state, faults, self.admin, self._abort_connection)
        self._servers: list[_Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._config: uvicorn.Config | None = None
        for org in state.orgs:
            org.records = self._new_records(org)

    # -- public surface --------------------------------------------------------------------
    @property
    def login_url(self) -> str:
        return self.state.login_url

    @property
    def admin_url(self) -> str:
        return self.state.login_url + "/_emulator"

    @property
    def orgs(self) -> list[Org]:
        return self.state.orgs

    @property
    def apps(self) -> list[App]:
        return self.state.apps

    @property
    def app_config(self) -> App:
        """The (first) connected app."""
        return self.state.apps[0]

    @property
    def clock(self) -> Clock:
        return self.state.clock

    @property
    def ca_file(self) -> Path | None:
        return self.tls.ca_file if self.tls else None

    def describe(self) -> dict[str, Any]:
        """The ``--json`` document: URLs, apps (with secrets and the JWT key), orgs, users."""
        return {
            **self._urls(),
            "apps": [a.public() for a in self.state.apps],
            "orgs": [
                {
                    "org_id": o.org_id,
                    "name": o.name,
                    "instance_url": o.instance_url,
                    "my_domain_url": o.my_domain_url,
                    "users": [u.public() for u in o.users],
                }
                for o in self.state.orgs
            ],
        }

    def mint_jwt(
        self,
        username: str,
        *,
        client_id: str | None = None,
        audience: str | None = None,
        lifetime: float = 170,
    ) -> str:
        """A signed JWT-bearer assertion for ``username`` (tests; the key is the app's)."""
        import jwt

        app = self.state.apps_by_id[client_id] if client_id else self.state.apps[0]
        claims = {
            "iss": app.client_id,
            "sub": username,
            "aud": audience or self.login_url,
            "exp": int(self.clock.time() + lifetime),
        }
        return jwt.encode(claims, app.private_key_pem, algorithm="RS256")

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        orgs: int = 2,
        *,
        apps: int = 1,
        seed: int | None = None,
        tls: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
    ) -> AsyncIterator[Emulator]:
        """Serve a login host and ``orgs`` instance hosts on ``host`` until the block ends.

        ``port=0`` picks free ports; otherwise org *i* listens on ``port + i``. ``apps``
        connected apps are registered (each valid in every org).
        """
        emu, sockets = cls._create(
            orgs, apps=apps, seed=seed, tls=tls, host=host, port=port, clock=clock
        )
        try:
            await emu._start(sockets)
            yield emu
        finally:
            await emu._stop()

    # -- internals -------------------------------------------------------------------------
    @classmethod
    def _create(
        cls,
        n_orgs: int,
        *,
        apps: int,
        seed: int | None,
        tls: bool,
        host: str,
        port: int,
        clock: Clock | None,
    ) -> tuple[Emulator, list[socket.socket]]:
        if n_orgs < 1 or apps < 1:
            raise ValueError("an emulator needs at least one org and one connected app")
        sockets: list[socket.socket] = []
        try:
            for i in range(n_orgs + 1):
                sockets.append(_bind(host, port + i if port else 0))  # noqa: PERF401
        except OSError:
            for s in sockets:
                s.close()
            raise
        scheme = "https" if tls else "http"
        url_host = f"[{host}]" if ":" in host else host
        urls = [f"{scheme}://{url_host}:{s.getsockname()[1]}" for s in sockets]
        state = build_fixture(
            clock or OffsetClock(),
            n_orgs,
            seed=seed,
            login_url=urls[0],
            instance_urls=urls[1:],
            n_apps=apps,
        )
        state.ports[sockets[0].getsockname()[1]] = HostBinding("login", urls[0])
        for org, sock, url in zip(state.orgs, sockets[1:], urls[1:], strict=True):
            state.ports[sock.getsockname()[1]] = HostBinding("instance", url, org)
        tls_files = make_tls_files([host]) if tls else None
        emu = cls(
            state=state,
            faults=Faults(state.clock),
            host=host,
            scheme=scheme,
            tls=tls_files,
            seed=seed,
        )
        return emu, sockets

    def _urls(self) -> dict[str, Any]:
        out: dict[str, Any] = {"login_url": self.login_url, "admin_url": self.admin_url}
        if self.tls:
            out["ca_file"] = str(self.tls.ca_file)
        return out

    def _new_records(self, org: Org) -> Any:
        try:
            from tokenkeep.emulator.records import OrgRecords
        except ModuleNotFoundError:
            return None
        return OrgRecords(org_id=org.org_id, seed=self._records_seed + org.index, clock=self.clock)

    async def _start(self, sockets: list[socket.socket]) -> None:
        self._config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            server_header=False,
            # Idle keep-alive clients (requests over TLS) would otherwise hold a stop for 1 s.
            timeout_graceful_shutdown=0.25,  # type: ignore[arg-type]  # a float works
            ssl_certfile=str(self.tls.cert_file) if self.tls else None,
            ssl_keyfile=str(self.tls.key_file) if self.tls else None,
        )
        for sock in sockets:
            self._serve(sock)
        for server in self._servers:
            for _ in range(2000):  # bounded: ~10 s
                if server.started:
                    break
                await asyncio.sleep(0.005)
            else:
                raise RuntimeError("the emulator did not start")

    def _serve(self, sock: socket.socket) -> None:
        if self._config is None:
            raise RuntimeError("the emulator is not started")
        server = _Server(self._config)
        self._servers.append(server)
        self._tasks.append(asyncio.get_running_loop().create_task(server.serve(sockets=[sock])))

    async def _stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        if self.tls is not None:
            # The generated CA and server key live in a private temp dir: leave nothing behind.
            shutil.rmtree(self.tls.ca_file.parent, ignore_errors=True)

    def _open_host(self, org: Org, target: str) -> str:
        """Bind a new instance host for ``org`` (``"new"`` or a URL with a free port)."""
        if target == "new":
            port = 0
        else:
            parts = urlsplit(target)
            if parts.hostname != self.host.strip("[]") or parts.port is None:
                raise ValueError(
                    f'instance_url must be "new" or {self.scheme}://{self.host}:<port>'
                )
            if parts.port in self.state.ports:
                if self.state.ports[parts.port].kind == "instance":
                    self.state.move_org(org, self.state.ports[parts.port].url)
                    return org.instance_url
                raise ValueError("that port is the login host")
            port = parts.port
        try:
            asyncio.get_running_loop()
        except RuntimeError as exc:
            raise ValueError("moving an org needs the emulator's event loop") from exc
        try:
            sock = _bind(self.host, port)
        except OSError as exc:
            raise ValueError(f"cannot listen on port {port}: {exc}") from exc
        new_port = sock.getsockname()[1]
        url_host = f"[{self.host}]" if ":" in self.host else self.host
        url = f"{self.scheme}://{url_host}:{new_port}"
        self.state.ports[new_port] = HostBinding("instance", url, None)
        self.state.move_org(org, url)
        self._serve(sock)
        return url

    def _abort_connection(self, client: tuple[str, int]) -> bool:
        for server in self._servers:
            for conn in list(server.server_state.connections):
                if getattr(conn, "client", None) == client:
                    transport = getattr(conn, "transport", None)
                    if transport is not None:
                        transport.abort()
                        return True
        return False


def _summary(doc: dict[str, Any]) -> str:
    lines = [f"Salesforce org emulator: login {doc['login_url']}  admin {doc['admin_url']}"]
    if doc.get("ca_file"):
        lines.append(f"  CA file: {doc['ca_file']}")
    for app in doc["apps"]:
        lines.append(f"  app {app['name']}: client_id={app['client_id']}")
        lines.append(f"      client_secret={app['client_secret']}")
        lines.append(f"      redirect_uris={', '.join(app['redirect_uris'])}")
    for org in doc["orgs"]:
        lines.append(f"  org {org['org_id']} at {org['instance_url']}")
        lines.extend(f"    user {u['username']} / {u['password']}" for u in org["users"])
    return "\n".join(lines)


def run_emulator(  # noqa: PLR0917 (the CLI's flags, in its order)
    host: str = "127.0.0.1",
    port: int = 8500,
    orgs: int = 3,
    tls: bool = False,
    json_output: bool = False,
    seed: int | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (the ``tokenkeep emulator`` command).

    With ``json_output`` stdout carries exactly one JSON document, printed when every host
    is listening; everything else goes to stderr.
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        async with Emulator.running(orgs=orgs, seed=seed, tls=tls, host=host, port=port) as emu:
            doc = emu.describe()
            if json_output:
                sys.stdout.write(json.dumps(doc) + "\n")
            else:
                sys.stdout.write(_summary(doc) + "\n")
            sys.stdout.flush()
            await stop.wait()

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    asyncio.run(main())
