"""What the demo prints: a step's ✓ or ✗ with its lines, the connections table, the ready lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tokenkeep.demo.steps import API_VERSION, INTEGRATION, StepResult, Tour, expect

if TYPE_CHECKING:
    from tokenkeep.harness import GatewayUnderTest

__all__ = ["connections_table", "print_step", "ready_lines"]


def print_step(console: Console, step: StepResult) -> None:
    mark = "[bold green]✓[/]" if step.ok else "[bold red]✗[/]"
    console.print(f"{mark} {step.number}. [bold]{escape(step.title)}[/]")
    for line in step.lines:
        console.print(f"     {escape(line)}")


async def connections_table(tour: Tour) -> Table:
    answer = await tour.http.get("/connections")
    expect(answer.status_code == 200, "GET /connections", answer)
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


def ready_lines(env: GatewayUnderTest) -> list[str]:
    """The URLs and the API key: plain lines (a frame would crop long URLs)."""
    url, emu = env.base_url, env.emulator
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
