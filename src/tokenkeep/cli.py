"""The ``tokenkeep`` command (typer + rich).

``serve`` and ``demo`` run the gateway; the admin commands (``db``, ``keys``,
``integrations``, ``connections``) open the store directly with the same ``TOKENKEEP_*``
settings, so they work whether or not a server is running.

Every failure we expect (a bad setting, a wrong encryption key, an unreachable database, a
bad argument) ends as one red sentence on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
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
from rich.table import Table

from tokenkeep.__about__ import __version__
from tokenkeep.clock import SystemClock
from tokenkeep.config import Settings, load_settings
from tokenkeep.errors import TokenkeepError
from tokenkeep.observability.logging import configure_logging
from tokenkeep.secret import Secret

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    name="tokenkeep",
    help="A self-hosted auth gateway that keeps every customer's Salesforce session alive.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys and encryption keys.", no_args_is_help=True)
integrations_app = typer.Typer(help="OAuth apps (Salesforce connected apps).", no_args_is_help=True)
connections_app = typer.Typer(help="Customer connections.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")
app.add_typer(integrations_app, name="integrations")
app.add_typer(connections_app, name="connections")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# -- plumbing ------------------------------------------------------------------------------
def _fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(1)


def _pydantic_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"]) or "input"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{field}: {msg.removeprefix('Value error, ')}")
    return "; ".join(parts)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except TokenkeepError as exc:
        _fail(exc.message)
    return settings


def _run(coro: Coroutine[Any, Any, T], *, fast_loop: bool = False) -> T:
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
        _fail(exc.message)
    except pydantic.ValidationError as exc:
        _fail(_pydantic_message(exc))


@asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[Any]:
    from tokenkeep.store import open_store

    store = await open_store(settings, clock=SystemClock())
    try:
        yield store
    finally:
        await store.close()


def _with_store(fn: Callable[[Any], Awaitable[T]]) -> T:
    settings = _settings()
    configure_logging(settings.log_format, "WARNING")

    async def go() -> T:
        async with _store(settings) as store:
            return await fn(store)

    return _run(go())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _print_json(data: Any) -> None:
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


def _print_api_key(api_key: Secret, data_dir: Path) -> None:
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


# -- serve -----------------------------------------------------------------------------------
@app.command()
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
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        if workers > 1:
            _serve_workers(settings, workers)
        else:
            _run(_serve_one(settings), fast_loop=True)
    except KeyboardInterrupt:
        pass


def _announce(url: str, api_key: Secret | None, settings: Settings) -> None:
    console.print(f"tokenkeep {__version__} is listening on [bold]{url}[/]")
    if api_key is not None:
        _print_api_key(api_key, settings.data_dir)


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

    api_key = _run(prepare())
    _announce(f"http://{settings.host}:{settings.port}", api_key, settings)
    run_server(settings, workers=workers)


# -- scheduler (issue 5) ---------------------------------------------------------------------
@app.command()
def scheduler() -> None:
    """Run only the proactive refresh scheduler (no HTTP server) until Ctrl-C or SIGTERM.

    Any number may run beside `tokenkeep serve` processes: they share the work through the
    database (SKIP LOCKED claims on PostgreSQL), and no connection is refreshed twice.
    """
    os.environ["TOKENKEEP_SCHEDULER_ENABLED"] = "true"
    settings = _settings()
    configure_logging(settings.log_format, settings.log_level)
    try:
        _run(_scheduler_only(settings))
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
            _print_api_key(api_key, settings.data_dir)
        await stop.wait()
    finally:
        await gateway.stop()


# -- demo --------------------------------------------------------------------------------------
@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Gateway port (0: any free port).")] = 8400,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Exit after the tour (non-zero if a step failed).")
    ] = False,
) -> None:
    """Run a gateway and a Salesforce emulator in one process, tour the six causes, stay up."""
    from tokenkeep.demo import run_demo

    code = run_demo(console, port=port, wait=not no_wait)
    if code:
        raise typer.Exit(code)


# -- db ------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the database migrations (start-up also does this)."""
    from tokenkeep.store.database import Database

    settings = _settings()
    configure_logging(settings.log_format, "WARNING")

    async def go() -> str | None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(
            settings.db_url, clock=SystemClock(), connect_timeout=settings.db_connect_timeout
        )
        try:
            await db.upgrade()
            return await db.current_revision()
        finally:
            await db.close()

    revision = _run(go())
    console.print(f"database is at revision [bold]{revision}[/] (head)")


# -- keys ------------------------------------------------------------------------------------------
@keys_app.command("create-api-key")
def keys_create_api_key(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
) -> None:
    """Create an API key and print it (once)."""

    async def go(store: Any) -> Any:
        return await store.api_keys.create(name)

    created = _with_store(go)
    console.print(f"API key [bold]{created.key.id}[/] ({escape(created.key.name)}):")
    sys.stdout.write(created.secret.reveal() + "\n")
    err_console.print("Store it now: it is shown only once.")


@keys_app.command("list")
def keys_list(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List API keys (never their secrets)."""

    async def go(store: Any) -> Any:
        return await store.api_keys.list()

    keys = _with_store(go)
    if json_output:
        _print_json(
            [
                {
                    "id": k.id,
                    "name": k.name,
                    "prefix": k.prefix,
                    "created_at": k.created_at,
                    "last_used_at": k.last_used_at,
                    "revoked_at": k.revoked_at,
                }
                for k in keys
            ]
        )
        return
    table = Table("id", "name", "prefix", "created", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.id, k.name, k.prefix, _when(k.created_at), _when(k.last_used_at), _when(k.revoked_at)
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id or shown prefix.")]) -> None:
    """Revoke an API key (requests with it get 401 from now on)."""

    async def go(store: Any) -> Any:
        return await store.api_keys.revoke(key_id)

    key = _with_store(go)
    console.print(f"revoked API key [bold]{key.id}[/] ({escape(key.name)})")


@keys_app.command("rotate")
def keys_rotate(
    yes: Annotated[
        bool, typer.Option("--yes", help="Do not ask (TOKENKEEP_ENCRYPTION_KEYS users).")
    ] = False,
) -> None:
    """Add a new encryption key, make it primary and re-encrypt every stored secret.

    With the keys file (the default) the new key is written to it first. With
    TOKENKEEP_ENCRYPTION_KEYS the new value is printed: put it in the environment of every
    instance before answering yes.
    """
    from tokenkeep.crypto import KEYS_FILE_NAME, Keyring, new_key_bytes, new_key_id, write_keys_file
    from tokenkeep.store import rotate_keys

    settings = _settings()
    configure_logging(settings.log_format, "WARNING")
    from_env = bool(settings.encryption_keys and settings.encryption_keys.get_secret_value())

    async def go() -> Any:
        async with _store(settings) as store:
            kid, material = new_key_id(), new_key_bytes()
            # Persist the new keyring before any row is rewritten with it: a crash
            # mid-rotation must never leave data under a key nobody saved.
            future = Keyring.parse(store.keyring.export().reveal())
            future.promote(kid, material)
            if from_env:
                console.print("New TOKENKEEP_ENCRYPTION_KEYS value (primary first):")
                sys.stdout.write(future.export().reveal() + "\n")
                if not yes and not typer.confirm(
                    "Saved it where every instance reads TOKENKEEP_ENCRYPTION_KEYS?"
                ):
                    raise TokenkeepError("rotation cancelled; nothing was changed.")
            else:
                path = settings.data_dir / KEYS_FILE_NAME
                write_keys_file(path, future)
                console.print(f"new key [bold]{kid}[/] written to {path}")
            return await rotate_keys(store.db, store.keyring, kid, material)

    result = _run(go())
    console.print(
        f"primary key is now [bold]{result.primary_key_id}[/]; "
        f"re-encrypted {result.rows_reencrypted} row(s)"
        + (f", {result.rows_remaining} still pending" if result.rows_remaining else "")
    )


# -- integrations ----------------------------------------------------------------------
def _integration_dict(integration: Any) -> dict[str, Any]:
    from tokenkeep.api.integrations import integration_out

    return integration_out(integration).model_dump(mode="json")


@integrations_app.command("list")
def integrations_list(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List integrations."""

    async def go(store: Any) -> Any:
        return await store.integrations.list()

    items = [_integration_dict(i) for i in _with_store(go)]
    if json_output:
        _print_json(items)
        return
    table = Table("key", "provider", "auth mode", "client id", "login url", "secret")
    for i in items:
        table.add_row(
            i["key"],
            i["provider"],
            i["auth_mode"],
            i["client_id"],
            i["login_url"],
            "yes" if i["has_client_secret"] or i["has_private_key"] else "no",
        )
    console.print(table)


@integrations_app.command("show")
def integrations_show(key: str) -> None:
    """Show one integration (as JSON, without secrets)."""

    async def go(store: Any) -> Any:
        return await store.integrations.get(key)

    _print_json(_integration_dict(_with_store(go)))


@integrations_app.command("put")
def integrations_put(
    key: str,
    *,
    client_id: Annotated[str, typer.Option(help="The connected app's consumer key.")],
    client_secret: Annotated[
        str | None, typer.Option(help="Consumer secret (or TOKENKEEP_CLIENT_SECRET).")
    ] = None,
    login_url: Annotated[str, typer.Option()] = "https://login.salesforce.com",
    scope: Annotated[list[str] | None, typer.Option(help="Repeat for several scopes.")] = None,
    auth_mode: Annotated[str, typer.Option(help="oauth2, jwt_bearer or client_credentials.")] = (
        "oauth2"
    ),
    private_key_file: Annotated[Path | None, typer.Option(help="PEM key for jwt_bearer.")] = None,
    username: Annotated[str | None, typer.Option(help="Subject for jwt_bearer.")] = None,
    session_timeout: Annotated[int | None, typer.Option(help="Org session timeout, s.")] = None,
    provider: Annotated[str, typer.Option()] = "salesforce",
) -> None:
    """Create or replace an integration."""
    from tokenkeep.api.integrations import save_integration
    from tokenkeep.api.schemas import IntegrationIn

    settings = _settings()
    secret = client_secret or os.environ.get("TOKENKEEP_CLIENT_SECRET")
    fields: dict[str, Any] = {
        "provider": provider,
        "client_id": client_id,
        "login_url": login_url,
        "scopes": scope or [],
        "auth_mode": auth_mode,
        "username": username,
        "session_timeout_seconds": session_timeout,
    }
    if secret:
        fields["client_secret"] = secret
    if private_key_file is not None:
        try:
            fields["private_key"] = private_key_file.read_text()
        except OSError as exc:
            _fail(f"cannot read {private_key_file}: {exc.strerror}")
    try:
        body = IntegrationIn(**fields)
    except pydantic.ValidationError as exc:
        _fail(_pydantic_message(exc))

    async def go(store: Any) -> Any:
        return await save_integration(store, settings, key, body)

    integration, created = _with_store(go)
    console.print(f"{'created' if created else 'updated'} integration [bold]{integration.key}[/]")


@integrations_app.command("delete")
def integrations_delete(key: str) -> None:
    """Delete an integration (refused while connections use it)."""

    async def go(store: Any) -> None:
        await store.integrations.delete(key)

    _with_store(go)
    console.print(f"deleted integration [bold]{key}[/]")


# -- connections -----------------------------------------------------------------------
def _connection_dict(connection: Any) -> dict[str, Any]:
    from tokenkeep.api.connections import connection_out

    return connection_out(connection).model_dump(mode="json")


@connections_app.command("list")
def connections_list(
    *,
    integration: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
    org_id: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List connections (oldest first; --cursor pages on)."""
    from tokenkeep.store.records import CONNECTION_STATUSES

    if status is not None and status not in CONNECTION_STATUSES:
        _fail(f"--status must be one of {', '.join(CONNECTION_STATUSES)}")

    async def go(store: Any) -> Any:
        return await store.connections.list(
            integration=integration, status=status, org_id=org_id, limit=limit, cursor=cursor
        )

    page = _with_store(go)
    items = [_connection_dict(c) for c in page.items]
    if json_output:
        _print_json({"data": items, "next_cursor": page.next_cursor})
        return
    table = Table("id", "integration", "status", "org", "instance", "expires")
    for c in items:
        table.add_row(
            c["id"],
            c["integration"],
            c["status"] + (f" ({c['status_reason']})" if c["status_reason"] else ""),
            c["org_id"] or "-",
            c["instance_url"],
            c["expires_at"] or "-",
        )
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}")


@connections_app.command("show")
def connections_show(connection_id: str) -> None:
    """Show one connection (as JSON, without tokens)."""

    async def go(store: Any) -> Any:
        return await store.connections.get(connection_id)

    _print_json(_connection_dict(_with_store(go)))


@connections_app.command("import")
def connections_import(
    file: Annotated[
        Path | None,
        typer.Argument(help="JSON file as for POST /connections ('-' reads stdin)."),
    ] = None,
    *,
    integration: Annotated[str | None, typer.Option()] = None,
    connection_id: Annotated[str | None, typer.Option()] = None,
    instance_url: Annotated[str | None, typer.Option()] = None,
    access_token: Annotated[
        str | None, typer.Option(help="Or TOKENKEEP_ACCESS_TOKEN (keeps it out of ps).")
    ] = None,
    refresh_token: Annotated[str | None, typer.Option(help="Or TOKENKEEP_REFRESH_TOKEN.")] = None,
    id_url: Annotated[str | None, typer.Option(help="The token response's 'id' URL.")] = None,
    issued_at: Annotated[str | None, typer.Option(help="Epoch milliseconds.")] = None,
) -> None:
    """Import a connection from tokens you already hold (a file, or flags)."""
    from tokenkeep.api.connections import create_imported_connection
    from tokenkeep.api.schemas import ConnectionImport

    settings = _settings()
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text()
            data = json.loads(text)
        except OSError as exc:
            _fail(f"cannot read {file}: {exc.strerror}")
        except json.JSONDecodeError as exc:
            _fail(f"{file} is not valid JSON (line {exc.lineno}, column {exc.colno})")
    else:
        token = access_token or os.environ.get("TOKENKEEP_ACCESS_TOKEN")
        refresh = refresh_token or os.environ.get("TOKENKEEP_REFRESH_TOKEN")
        if not (integration and instance_url and token):
            _fail("give a JSON file, or --integration, --instance-url and --access-token")
        creds: dict[str, Any] = {"access_token": token, "instance_url": instance_url}
        if refresh:
            creds["refresh_token"] = refresh
        if id_url:
            creds["id"] = id_url
        if issued_at:
            creds["issued_at"] = issued_at
        data = {"integration": integration, "credentials": creds}
        if connection_id:
            data["connection_id"] = connection_id
    try:
        body = ConnectionImport.model_validate(data)
    except pydantic.ValidationError as exc:
        _fail(_pydantic_message(exc))

    async def go(store: Any) -> Any:
        return await create_imported_connection(store, settings, body)

    connection = _with_store(go)
    console.print(f"imported connection [bold]{connection.id}[/]")


@connections_app.command("delete")
def connections_delete(connection_id: str) -> None:
    """Delete a connection and its stored tokens."""

    async def go(store: Any) -> None:
        await store.connections.delete(connection_id)

    _with_store(go)
    console.print(f"deleted connection [bold]{connection_id}[/]")


@app.command()
def emulator(  # noqa: PLR0917 (typer maps each flag to a parameter)
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Login host port; org i listens on port + i.")] = 8500,
    orgs: Annotated[int, typer.Option(min=1, help="How many orgs to emulate.")] = 3,
    tls: Annotated[bool, typer.Option(help="Serve HTTPS with a generated local CA.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON document on stdout when ready.")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="Deterministic ids and data.")] = None,
) -> None:
    """Run the Salesforce org emulator (OAuth, REST data API, admin API under /_emulator/)."""
    from tokenkeep.emulator import run_emulator

    try:
        run_emulator(host, port, orgs, tls, json_output, seed)
    except OSError as exc:
        _fail(f"cannot start the emulator on {host}:{port}: {exc}")


def main() -> None:
    """Console-script entry point."""
    app()
