"""``tokenkeep connections``: customer connections, read and written through the store
directly."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import pydantic
import typer
from rich.table import Table

from tokenkeep.cli._shared import (
    console,
    fail,
    print_json,
    pydantic_message,
    settings_or_fail,
    with_store,
)

__all__ = ["connections_app"]

connections_app = typer.Typer(help="Customer connections.", no_args_is_help=True)


def _connection_dict(connection: Any) -> dict[str, Any]:
    from tokenkeep.api.schemas import connection_out

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
        fail(f"--status must be one of {', '.join(CONNECTION_STATUSES)}")

    async def go(store: Any) -> Any:
        return await store.connections.list(
            integration=integration, status=status, org_id=org_id, limit=limit, cursor=cursor
        )

    page = with_store(go)
    items = [_connection_dict(c) for c in page.items]
    if json_output:
        print_json({"data": items, "next_cursor": page.next_cursor})
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

    print_json(_connection_dict(with_store(go)))


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
    from tokenkeep.api.schemas import ConnectionImport
    from tokenkeep.lifecycle.imports import create_imported_connection

    settings = settings_or_fail()
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text()
            data = json.loads(text)
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror}")
        except json.JSONDecodeError as exc:
            fail(f"{file} is not valid JSON (line {exc.lineno}, column {exc.colno})")
    else:
        token = access_token or os.environ.get("TOKENKEEP_ACCESS_TOKEN")
        refresh = refresh_token or os.environ.get("TOKENKEEP_REFRESH_TOKEN")
        if not (integration and instance_url and token):
            fail("give a JSON file, or --integration, --instance-url and --access-token")
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
        fail(pydantic_message(exc))

    async def go(store: Any) -> Any:
        return await create_imported_connection(store, settings, body.to_import())

    connection = with_store(go)
    console.print(f"imported connection [bold]{connection.id}[/]")


@connections_app.command("delete")
def connections_delete(connection_id: str) -> None:
    """Delete a connection and its stored tokens."""

    async def go(store: Any) -> None:
        await store.connections.delete(connection_id)

    with_store(go)
    console.print(f"deleted connection [bold]{connection_id}[/]")
