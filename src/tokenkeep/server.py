"""The ASGI application tokenkeep serves, and how uvicorn runs it.

One process serves two apps behind a tiny dispatcher:

* ``/proxy/...`` and ``/c/...`` go to the proxy (a raw ASGI app: the hot path, no
  framework routing) once one is configured;
* everything else goes to the FastAPI control plane.

The dispatcher also owns the ASGI lifespan: it starts the :class:`~tokenkeep.runtime.Gateway`
(data dir, keys, migrations, background services) before the first request and stops it
after the last one.

With ``--workers N`` uvicorn needs an import string: every worker process imports
``tokenkeep.server:create_asgi_app`` (a factory) and builds its own gateway from the same
``TOKENKEEP_*`` environment.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenkeep.api import create_app
from tokenkeep.config import Settings, get_settings
from tokenkeep.observability.logging import configure_logging, get_logger
from tokenkeep.runtime import Gateway

__all__ = [
    "PROXY_PREFIXES",
    "GatewayApp",
    "ProxyFactory",
    "build_asgi_app",
    "create_asgi_app",
    "run_server",
]

#: Path prefixes served by the proxy app (DESIGN.md: ``/proxy/{path}`` and ``/c/{id}/{path}``).
PROXY_PREFIXES: tuple[str, ...] = ("/proxy/", "/c/")

#: Builds the proxy ASGI app for a gateway (issue 6 provides one).
ProxyFactory = Callable[[Gateway], ASGIApp]


class GatewayApp:
    """Top-level ASGI app: routes by path prefix, runs the gateway's start/stop on lifespan."""

    def __init__(self, gateway: Gateway, control: ASGIApp, proxy: ASGIApp | None = None) -> None:
        self.gateway = gateway
        self.control = control
        self.proxy = proxy
        self._log = get_logger("tokenkeep.server")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if self.proxy is not None and scope["path"].startswith(PROXY_PREFIXES):
            await self.proxy(scope, receive, send)
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
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.gateway.stop()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def _default_proxy_factory() -> ProxyFactory | None:
    # Seam for issue 6: the proxy package exposes ``create_proxy_app(gateway)``. Until it
    # exists, /proxy/ and /c/ paths fall through to the control API (and 404 there).
    try:
        from tokenkeep.proxy import create_proxy_app  # type: ignore[attr-defined]
    except ImportError:
        return None
    factory: ProxyFactory = create_proxy_app
    return factory


def build_asgi_app(gateway: Gateway, proxy_factory: ProxyFactory | None = None) -> GatewayApp:
    """The full ASGI app for ``gateway`` (control plane, plus the proxy when available)."""
    factory = proxy_factory if proxy_factory is not None else _default_proxy_factory()
    proxy = factory(gateway) if factory is not None else None
    return GatewayApp(gateway, create_app(gateway), proxy)


def create_asgi_app(settings: Settings | None = None) -> GatewayApp:
    """uvicorn factory (``tokenkeep.server:create_asgi_app``): settings from the environment."""
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return build_asgi_app(Gateway(settings))


def run_server(settings: Settings, *, workers: int = 1) -> None:
    """Serve on ``settings.host:settings.port`` until interrupted (blocking)."""
    import uvicorn

    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # our structlog set-up handles uvicorn's loggers
        "access_log": False,  # the control API logs its own request lines, without queries
        "lifespan": "on",
        "server_header": False,
    }
    if workers > 1:
        uvicorn.run("tokenkeep.server:create_asgi_app", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_asgi_app(settings), **common)  # type: ignore[arg-type]
