"""The ASGI application tokenkeep serves, and how uvicorn runs it.

One process serves two apps behind a tiny dispatcher:

* ``/proxy/...`` and ``/c/...`` go to the proxy (a raw ASGI app: the hot path, no
  framework routing);
* ``GET /connections/{id}/token`` goes to its raw ASGI fast path (``api/token_fast.py``),
  which hands anything unusual on to the control plane;
* everything else goes to the FastAPI control plane.

The dispatcher also owns the ASGI lifespan: it starts the :class:`~tokenkeep.runtime.Gateway`
(data dir, keys, migrations, background services) before the first request and stops it
after the last one.

With ``--workers N`` uvicorn needs an import string: every worker process imports
``tokenkeep.server:create_asgi_app`` (a factory) and builds its own gateway from the same
``TOKENKEEP_*`` environment.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import socket
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenkeep.api import create_app
from tokenkeep.api.token_fast import TokenFastPath
from tokenkeep.config import Settings, get_settings
from tokenkeep.errors import ConfigError
from tokenkeep.observability.logging import configure_logging, get_logger
from tokenkeep.proxy import create_proxy_app
from tokenkeep.runtime import Gateway

__all__ = [
    "PROXY_PREFIXES",
    "SERVING_GC_THRESHOLDS",
    "GatewayApp",
    "ProxyFactory",
    "ServerHandle",
    "build_asgi_app",
    "check_port_free",
    "create_asgi_app",
    "free_port",
    "freeze_startup_heap",
    "run_server",
]

#: Path prefixes served by the proxy app (DESIGN.md: ``/proxy/{path}`` and ``/c/{id}/{path}``).
PROXY_PREFIXES: tuple[str, ...] = ("/proxy/", "/c/")

#: Request header limits (uvicorn's httptools parser sets none): more headers or more bytes
#: of them than this is refused with 431 before any app sees the request. Generous for a
#: real client (a Salesforce call carries ~10 headers, a few KB); what is bounded is the
#: work and memory one request can make us spend, and what we would relay upstream.
MAX_REQUEST_HEADERS = 200
MAX_REQUEST_HEADER_BYTES = 64 * 1024
_TOO_LARGE = (
    b'{"error":{"code":"request_headers_too_large","message":"The request headers are too '
    b'large: at most %d headers and %d KiB in all."}}'
    % (MAX_REQUEST_HEADERS, MAX_REQUEST_HEADER_BYTES // 1024)
)


def headers_too_large(headers: list[tuple[bytes, bytes]]) -> bool:
    """True when a request's headers exceed :data:`MAX_REQUEST_HEADERS` or the byte limit."""
    if len(headers) > MAX_REQUEST_HEADERS:
        return True
    return sum(len(name) + len(value) for name, value in headers) > MAX_REQUEST_HEADER_BYTES


async def _refuse_headers(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_TOO_LARGE)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _TOO_LARGE})


#: Builds the proxy ASGI app for a gateway (default: :func:`tokenkeep.proxy.create_proxy_app`).
ProxyFactory = Callable[[Gateway], ASGIApp]


#: The garbage collector's thresholds in a serving process (CPython's default: 700, 10, 10).
#: A proxied call allocates ~35 tracked objects that live until its answer is relayed, with
#: 32+ calls in flight: at 700, a young-generation collection ran every ~19 calls and took
#: ~150 µs (it walks every in-flight call's objects), and the operation log's queued entries,
#: surviving it, fed full collections. All that was ~19 µs of CPU per proxied call (5 %);
#: at 20,000 / 50 / 100 it is under 1 µs (docs/PERFORMANCE.md, "Garbage collection"). What
#: the young generation holds between collections is a few MB at most; reference counting
#: still frees everything without cycles at once.
SERVING_GC_THRESHOLDS = (20_000, 50, 100)


def freeze_startup_heap() -> None:
    """Tune the garbage collector for serving, once the gateway has started.

    Moves everything alive after start-up out of the collector's sight: the gateway's
    long-lived heap (FastAPI, pydantic, SQLAlchemy, Alembic: ~125 MB) would otherwise be
    re-scanned by every full collection, each one stopping the event loop for up to ~130 ms
    under load. Freezing it cut CPU per proxied request by ~30% and p99 by 3x
    (docs/PERFORMANCE.md). Then sets :data:`SERVING_GC_THRESHOLDS`. Only for server
    processes: a test process that starts many gateways would keep each one's start-up
    garbage forever.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_GC_THRESHOLDS)


class GatewayApp:
    """Top-level ASGI app: routes by path prefix, runs the gateway's start/stop on lifespan.

    ``freeze_heap``: call :func:`freeze_startup_heap` once the gateway has started (what the
    ``--workers`` processes do; the single-process server does it itself).
    """

    def __init__(
        self,
        gateway: Gateway,
        control: ASGIApp,
        proxy: ASGIApp | None = None,
        *,
        tokens: ASGIApp | None = None,
        freeze_heap: bool = False,
    ) -> None:
        self.gateway = gateway
        self.control = control
        self.proxy = proxy
        self.tokens = tokens
        self.freeze_heap = freeze_heap
        self._log = get_logger("tokenkeep.server")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "http" and headers_too_large(scope["headers"]):
            await _refuse_headers(send)
            return
        if self.proxy is not None and scope["path"].startswith(PROXY_PREFIXES):
            await self.proxy(scope, receive, send)
            return
        if self.tokens is not None and scope["type"] == "http" and TokenFastPath.wants(scope):
            await self.tokens(scope, receive, send)  # direct mode's hot path (token_fast.py)
            return
        await self.control(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:
                    # The message is one of our sentences (ConfigError, EncryptionKeyError,
                    # DatabaseUnavailableError) or an unexpected failure, logged in full.
                    self._log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if self.freeze_heap:
                    freeze_startup_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.gateway.stop()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def build_asgi_app(gateway: Gateway, proxy_factory: ProxyFactory | None = None) -> GatewayApp:
    """The full ASGI app for ``gateway``: the control plane and the proxy.

    ``proxy_factory`` replaces :func:`tokenkeep.proxy.create_proxy_app` (tests).
    """
    factory: ProxyFactory = proxy_factory if proxy_factory is not None else create_proxy_app
    control = create_app(gateway)
    return GatewayApp(gateway, control, factory(gateway), tokens=TokenFastPath(gateway, control))


def create_asgi_app(settings: Settings | None = None) -> GatewayApp:
    """uvicorn factory (``tokenkeep.server:create_asgi_app``): settings from the environment."""
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    app = build_asgi_app(Gateway(settings))
    app.freeze_heap = True
    return app


def _uvicorn_options(host: str, port: int) -> dict[str, object]:
    return {
        "host": host,
        "port": port,
        "log_config": None,  # our structlog set-up handles uvicorn's loggers
        "access_log": False,  # the control API logs its own request lines, without queries
        "lifespan": "on",
        "server_header": False,
        # X-Forwarded-* are not trusted (not even from loopback): the scope keeps the real
        # scheme and client. Also one ASGI middleware less on every proxied call.
        "proxy_headers": False,
        # Proxied responses carry Salesforce's own Date header; uvicorn must not add one.
        "date_header": False,
    }


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`ConfigError` (one clear sentence) if ``host:port`` cannot be bound."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "the address is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ConfigError(
                f"cannot listen on {host}:{port}: {reason} "
                "(choose another with --port or TOKENKEEP_PORT)."
            ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free on ``host`` right now (for demos and tests)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class ServerHandle:
    """uvicorn serving an ASGI app inside the running event loop (``serve``, ``demo``, tests).

    :meth:`start` returns once the socket listens (and lifespan start-up is done); the
    base URL it returns has the real port, even when ``port`` was 0.
    """

    def __init__(self, app: ASGIApp, *, host: str, port: int) -> None:
        import uvicorn

        self.host = host
        self._server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_options(host, port)))  # type: ignore[arg-type]
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, max_wait_seconds: float = 30.0) -> str:
        """Start serving; return ``http://host:port``. Bounded wait, then an error."""
        self._task = asyncio.create_task(self._server.serve())
        step = 0.02
        for _ in range(int(max_wait_seconds / step)):
            if self._server.started:
                break
            if self._task.done():
                await self._task
                raise ConfigError("the HTTP server stopped during start-up (see the log above).")
            await asyncio.sleep(step)
        else:
            await self.stop()
            raise ConfigError(f"the HTTP server did not start within {max_wait_seconds:g} s.")
        sock = self._server.servers[0].sockets[0]
        port = sock.getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    @property
    def exiting(self) -> bool:
        """True once a signal or :meth:`stop` asked the server to exit."""
        return bool(self._server.should_exit)

    async def wait(self) -> None:
        """Until the server exits (SIGINT/SIGTERM, or :meth:`stop`)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        """Ask the server to exit and wait for its shutdown (lifespan stop included)."""
        self._server.should_exit = True
        await self.wait()


def run_server(settings: Settings, *, workers: int = 1) -> None:
    """Serve on ``settings.host:settings.port`` until interrupted (blocking)."""
    import uvicorn

    common = _uvicorn_options(settings.host, settings.port)
    if workers > 1:
        uvicorn.run("tokenkeep.server:create_asgi_app", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_asgi_app(settings), **common)  # type: ignore[arg-type]
