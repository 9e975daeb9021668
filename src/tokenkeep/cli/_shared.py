"""What every ``tokenkeep`` command shares: the typer app, the consoles, and the plumbing
that turns expected failures into one red sentence on stderr and exit code 1."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import pydantic
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from tokenkeep.__about__ import __version__
from tokenkeep.clock import SystemClock
from tokenkeep.config import Settings, load_settings
from tokenkeep.errors import TokenkeepError
from tokenkeep.observability.logging import configure_logging
from tokenkeep.secret import Secret

__all__ = [
    "app",
    "console",
    "err_console",
    "fail",
    "print_api_key",
    "print_json",
    "pydantic_message",
    "run",
    "settings_or_fail",
    "store_session",
    "when",
    "with_store",
]

T = TypeVar("T")

app = typer.Typer(
    name="tokenkeep",
    help="A self-hosted auth gateway that keeps every customer's Salesforce session alive.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(1)


def pydantic_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"]) or "input"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{field}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def settings_or_fail(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except TokenkeepError as exc:
        fail(exc.message)
    return settings


def run(coro: Coroutine[Any, Any, T], *, fast_loop: bool = False) -> T:
    """Run ``coro``; expected failures become one red line and exit code 1.

    ``fast_loop``: on uvloop when it is installed (uvicorn[standard] brings it), as uvicorn's
    own worker processes do.
    """
    loop_factory = None
    if fast_loop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(coro)
    except TokenkeepError as exc:
        fail(exc.message)
    except pydantic.ValidationError as exc:
        fail(pydantic_message(exc))


@asynccontextmanager
async def store_session(settings: Settings) -> AsyncIterator[Any]:
    from tokenkeep.store import open_store

    store = await open_store(settings, clock=SystemClock())
    try:
        yield store
    finally:
        await store.close()


def with_store(fn: Callable[[Any], Awaitable[T]]) -> T:
    settings = settings_or_fail()
    configure_logging(settings.log_format, "WARNING")

    async def go() -> T:
        async with store_session(settings) as store:
            return await fn(store)

    return run(go())


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"tokenkeep {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """tokenkeep: keeps every customer's Salesforce session alive and correct."""


def print_api_key(api_key: Secret, data_dir: Path) -> None:
    console.print(
        Panel.fit(
            f"[bold]{api_key.reveal()}[/]\n\n"
            "This is your API key. It is shown once and stored only as a hash\n"
            f"(a copy is in {data_dir / 'secret-key'}, readable only by you).\n"
            "Send it as: Authorization: Bearer <api key>",
            title="API key",
            border_style="green",
        )
    )
