"""``tokenkeep serve`` (the gateway) and ``tokenkeep scheduler`` (only the proactive
refreshes): the long-running processes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from typing import Annotated

import typer

from tokenkeep.__about__ import __version__
from tokenkeep.cli._shared import console, print_api_key, run, settings_or_fail
from tokenkeep.config import Settings
from tokenkeep.observability.logging import configure_logging
from tokenkeep.observability.metrics import MULTIPROC_ENV
from tokenkeep.secret import Secret

__all__ = ["scheduler", "serve"]


def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [TOKENKEEP_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [TOKENKEEP_PORT].")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    no_scheduler: Annotated[
        bool, typer.Option("--no-scheduler", help="Do not run proactive refreshes here.")
    ] = False,
) -> None:
    """Run the gateway (control API and proxy) until Ctrl-C."""
    overrides: dict[str, str] = {}
    if host is not None:
        overrides["TOKENKEEP_HOST"] = host
    if port is not None:
        overrides["TOKENKEEP_PORT"] = str(port)
    if no_scheduler:
        overrides["TOKENKEEP_SCHEDULER_ENABLED"] = "false"
    # Through the environment, so worker processes (--workers) see the same settings.
    os.environ.update(overrides)
    settings = settings_or_fail()
    configure_logging(settings.log_format, settings.log_level)
    try:
        if workers > 1:
            _serve_workers(settings, workers)
        else:
            run(_serve_one(settings), fast_loop=True)
    except KeyboardInterrupt:
        pass


def _announce(url: str, api_key: Secret | None, settings: Settings) -> None:
    console.print(f"tokenkeep {__version__} is listening on [bold]{url}[/]")
    if api_key is not None:
        print_api_key(api_key, settings.data_dir)


async def _serve_one(settings: Settings) -> None:
    from tokenkeep.runtime import Gateway
    from tokenkeep.server import (
        ServerHandle,
        build_asgi_app,
        check_port_free,
        freeze_startup_heap,
    )

    check_port_free(settings.host, settings.port)
    gateway = Gateway(settings)
    # Build the app first: the proxy registers itself as a gateway service, which start()
    # then starts (its upstream session) and stop() closes.
    asgi_app = build_asgi_app(gateway)
    api_key = await gateway.start()
    freeze_startup_heap()
    try:
        server = ServerHandle(asgi_app, host=settings.host, port=settings.port)
        url = await server.start()
        _announce(url, api_key, settings)
        await server.wait()
    finally:
        await gateway.stop()


def _serve_workers(settings: Settings, workers: int) -> None:
    from tokenkeep.runtime import Gateway
    from tokenkeep.server import check_port_free, run_server

    async def prepare() -> Secret | None:
        # Migrations, keys and the first API key happen once, here, before the workers
        # start; each worker's own start-up then finds everything in place.
        check_port_free(settings.host, settings.port)
        gateway = Gateway(settings)
        try:
            return await gateway.start()
        finally:
            await gateway.stop()

    api_key = run(prepare())
    _prepare_multiprocess_metrics(settings)
    _announce(f"http://{settings.host}:{settings.port}", api_key, settings)
    run_server(settings, workers=workers)


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    """prometheus-client's multiprocess mode for the workers: a fresh directory for their
    value files, named in the environment they inherit (tokenkeep.observability.metrics)."""
    directory = settings.data_dir / "metrics-multiproc"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(directory)


def scheduler() -> None:
    """Run only the proactive refresh scheduler (no HTTP server) until Ctrl-C or SIGTERM.

    Any number may run beside `tokenkeep serve` processes: they share the work through the
    database (SKIP LOCKED claims on PostgreSQL), and no connection is refreshed twice.
    """
    os.environ["TOKENKEEP_SCHEDULER_ENABLED"] = "true"
    settings = settings_or_fail()
    configure_logging(settings.log_format, settings.log_level)
    try:
        run(_scheduler_only(settings))
    except KeyboardInterrupt:
        pass


async def _scheduler_only(settings: Settings) -> None:
    from tokenkeep.runtime import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    gateway = Gateway(settings)
    api_key = await gateway.start()
    try:
        console.print(f"tokenkeep {__version__} scheduler is running (Ctrl-C to stop)")
        if api_key is not None:
            print_api_key(api_key, settings.data_dir)
        await stop.wait()
    finally:
        await gateway.stop()
