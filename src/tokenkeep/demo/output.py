"""What the demo prints: each step (and, for a cause, the failing call and tokenkeep's
verdict), the summary table, the ready lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from tokenkeep.demo.results import CauseShown, StepResult, StepSpec
from tokenkeep.demo.steps import API_VERSION, INTEGRATION

if TYPE_CHECKING:
    from tokenkeep.harness import GatewayUnderTest

__all__ = ["print_step", "ready_lines", "summary_table"]

# Causes tokenkeep fixes by itself, and those it stops for and hands to a person.
_FIXES_ITSELF = frozenset({"expired", "wrong_instance", "maintenance"})
_INDENT = 5


def print_step(console: Console, step: StepResult) -> None:
    if step.skipped:
        mark = "[bold yellow]○[/]"
    else:
        mark = "[bold green]✓[/]" if step.ok else "[bold red]✗[/]"
    console.print(f"{mark} {step.number}. [bold]{escape(step.title)}[/]")
    if step.skipped:
        console.print(f"     [yellow]skipped[/]: {escape(step.skipped)}")
    if step.shown is not None:
        console.print(Padding(_cause_grid(step.shown), (0, 0, 0, _INDENT)))
        return
    for line in step.lines:
        console.print(f"     {escape(line)}")


def _cause_grid(shown: CauseShown) -> Table:
    """The cause step's story: set-up, failing call, answer, verdict, what came next."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    for line in shown.setup:
        grid.add_row("what happened", escape(line))
    failing = shown.failing
    grid.add_row("failing call", f"[bold]{escape(str(failing))}[/] ({escape(failing.by)})")
    grid.add_row("the caller got", escape(shown.answer))
    verdict = shown.verdict
    colour = "green" if verdict.cause in _FIXES_ITSELF else "yellow"
    grid.add_row(
        "tokenkeep says",
        f"[bold {colour}]{escape(str(verdict.cause))}[/] · {escape(verdict.confidence)} "
        f"confidence · connection {escape(verdict.status)}  [dim]({escape(verdict.where)})[/]",
    )
    for says in verdict.evidence:
        grid.add_row("  evidence", escape(says))
    grid.add_row("  fix", escape(verdict.fix))
    for line in shown.after:
        grid.add_row("then", escape(line))
    return grid


def summary_table(specs: list[StepSpec], steps: list[StepResult]) -> Table:
    """One row per cause step: its verdict, codes, what tokenkeep did, the status."""
    table = Table(
        title="The six causes, told apart",
        caption="status: what Salesforce answered → what the caller got",
        box=box.SIMPLE,
        pad_edge=False,
    )
    for name in ("step", "connection", "cause"):
        table.add_column(name, no_wrap=True)
    table.add_column("status", min_width=len("401 → 200"))
    table.add_column("what tokenkeep did", min_width=20)
    table.add_column("connection status", min_width=len("action_required"))
    ran = {s.number: s for s in steps}
    for number, spec in enumerate(specs, start=1):
        if spec.cause is None:
            continue
        step = ran.get(number)
        if step is None:
            table.add_row(f"[dim]○ {number}.[/]", "", spec.cause, "", "not run", "")
        elif step.skipped:
            table.add_row(f"[yellow]○[/] {number}.", "", spec.cause, "", "skipped", "")
        elif step.shown is None or not step.ok:
            what = step.lines[0] if step.lines else "failed"
            table.add_row(f"[red]✗[/] {number}.", "", spec.cause, "", escape(what), "")
        else:
            shown = step.shown
            table.add_row(
                f"[green]✓[/] {number}.",
                shown.connection_id,
                escape(str(shown.verdict.cause)),
                escape(shown.codes),
                escape(shown.did),
                escape(shown.status),
            )
    return table


def ready_lines(env: GatewayUnderTest) -> list[str]:
    """The URLs and the API key: plain lines (a frame would crop long URLs)."""
    url, emu = env.base_url, env.emulator
    initech = emu.orgs[2].org_id if len(emu.orgs) > 2 else "<org id>"
    return [
        f"gateway    {url}  (control API, connect flow, proxy under /c/<connection id>/)",
        f"dashboard  {url}/dashboard  (the tour's connections)",
        f"emulator   login {emu.login_url}  ·  admin API {emu.admin_url}/state",
        *(f"           {o.name}: {o.instance_url}  ({o.org_id})" for o in emu.orgs),
        f"data       {env.data_dir}  (deleted on exit)",
        f"API key    [bold]{env.api_key.reveal()}[/]",
        "",
        "Try it (export TOKENKEEP_API_KEY=<the API key above>):",
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" {url}/connections',
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" '
        f'"{url}/c/globex/services/data/{API_VERSION}/query?q=SELECT+Name+FROM+Account"',
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" "{url}/logs?kind=diagnosis"',
        "  # initech waits for its admin: turn the IP lock off, then ask tokenkeep again",
        f"  curl -X PATCH {emu.admin_url}/orgs/{initech} -H 'Content-Type: application/json' "
        """-d '{"lock_sessions_to_ip": false}'""",
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" -X POST '
        f"{url}/connections/initech/diagnose",
        "  # reconnect acme: open the returned url in a browser (users and passwords:"
        f" curl {emu.admin_url}/state)",
        f'  curl -H "Authorization: Bearer $TOKENKEEP_API_KEY" -X POST {url}/connect/sessions '
        f"-H 'Content-Type: application/json' "
        f"""-d '{{"integration": "{INTEGRATION}", "connection_id": "acme"}}'""",
    ]
