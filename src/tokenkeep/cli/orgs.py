"""``tokenkeep orgs``: org health (write pause, error rates, API usage), read from the store
directly, like the other admin commands."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Column, Table

from tokenkeep.cli._shared import console, print_json, settings_or_fail, with_store

__all__ = ["orgs_app"]

orgs_app = typer.Typer(help="Org health: write pause, error rates, API usage.")


def _usage(org: dict[str, Any]) -> str:
    limit = org["limit_info"]
    if not limit:
        return "-"
    usage = limit["api_usage"]
    return f"{usage['used']}/{usage['max']}" if usage else limit["raw"]


def _connections(org: dict[str, Any]) -> str:
    counts = org["connections"]
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "-"


def _pause(org: dict[str, Any]) -> str:
    pause = org["write_pause"]
    return f"paused (retry in {pause['retry_after']}s)" if pause["paused"] else "no"


@orgs_app.callback(invoke_without_command=True)
def orgs_list(
    ctx: typer.Context,
    *,
    integration: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option()] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List orgs with their health (by org id; --cursor pages on)."""
    if ctx.invoked_subcommand is not None:
        return
    from tokenkeep.api.org_schemas import org_out
    from tokenkeep.clock import SystemClock
    from tokenkeep.orgs.overview import list_orgs

    settings = settings_or_fail()

    async def go(store: Any) -> Any:
        return await list_orgs(
            store, settings, SystemClock(), integration=integration, limit=limit, cursor=cursor
        )

    page, next_cursor = with_store(go)
    items = [org_out(o).model_dump(mode="json") for o in page]
    if json_output:
        print_json({"data": items, "next_cursor": next_cursor})
        return
    table = Table(
        Column("org", no_wrap=True),
        "connections",
        "writes",
        "calls",
        "session errors",
        "spike",
        Column("api usage", no_wrap=True),
    )
    for org in items:
        rates = org["error_rates"]
        table.add_row(
            org["org_id"],
            _connections(org),
            _pause(org),
            str(rates["calls"]),
            f"{rates['session_errors']} ({rates['ratio']:.0%})",
            "open" if org["spike"]["open"] else "-",
            _usage(org),
        )
    console.print(table)
    if next_cursor:
        console.print(f"more: --cursor {next_cursor}")


@orgs_app.command("show")
def orgs_show(
    org_id: str,
    *,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one org's health."""
    from tokenkeep.api.org_schemas import org_out
    from tokenkeep.clock import SystemClock
    from tokenkeep.orgs.overview import show_org

    settings = settings_or_fail()

    async def go(store: Any) -> Any:
        return await show_org(store, settings, SystemClock(), org_id)

    org = org_out(with_store(go)).model_dump(mode="json")
    if json_output:
        print_json(org)
        return
    rates, timeout = org["error_rates"], org["session_timeout"]
    table = Table("", org["org_id"], show_header=True)
    table.add_row("connections", _connections(org))
    table.add_row(
        "writes",
        _pause(org)
        + (f" since {org['write_pause']['since']}" if org["write_pause"]["since"] else ""),
    )
    table.add_row(
        f"last {rates['window_seconds']}s",
        f"{rates['calls']} calls, {rates['session_errors']} session errors ({rates['ratio']:.0%})",
    )
    table.add_row(
        "recent causes",
        ", ".join(f"{r['cause']} {r['calls']}" for r in org["recent_causes"]) or "-",
    )
    spike = org["spike"]
    table.add_row("spike", f"open since {spike['since']}" if spike["open"] else "-")
    limit = org["limit_info"]
    table.add_row("api usage", _usage(org) + (f" (seen {limit['seen_at']})" if limit else ""))
    table.add_row(
        "session timeout",
        f"{timeout['seconds']}s learned ({timeout['samples']} samples)"
        if timeout["seconds"]
        else "-",
    )
    console.print(table)
