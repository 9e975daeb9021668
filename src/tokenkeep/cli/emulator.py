"""``tokenkeep emulator`` (the Salesforce org emulator alone) and ``tokenkeep demo`` (the
emulator, a gateway and a guided tour in one process)."""

from __future__ import annotations

from typing import Annotated

import typer

from tokenkeep.cli._shared import console, fail

__all__ = ["demo", "emulator"]


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
        fail(f"cannot start the emulator on {host}:{port}: {exc}")
