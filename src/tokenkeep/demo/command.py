"""``tokenkeep demo`` as a command: start the emulator and a gateway, run the tour, stay up."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from tokenkeep.clock import OffsetClock
from tokenkeep.demo.causes import CauseTour
from tokenkeep.demo.output import print_step, ready_lines, summary_table
from tokenkeep.demo.results import CauseShown, StepFailed, StepResult, StepSkipped, TourResult
from tokenkeep.demo.steps import HTTP_TIMEOUT
from tokenkeep.errors import TokenkeepError
from tokenkeep.harness import GatewayUnderTest, running_gateway
from tokenkeep.observability.logging import configure_logging

__all__ = ["DEFAULT_PORT", "DemoEnvironment", "demo_environment", "run_demo", "run_tour"]

#: The gateway's usual port; the demo takes another free port when it is busy.
DEFAULT_PORT = 8400
#: What a running demo is made of: the emulator and the gateway on one shared clock.
DemoEnvironment = GatewayUnderTest


def _pick_port(port: int | None) -> tuple[int, str | None]:
    """The port to listen on, and a note when the wanted one was busy."""
    from tokenkeep.server import check_port_free, free_port

    if not port:
        return free_port(), None
    try:
        check_port_free("127.0.0.1", port)
    except TokenkeepError:
        chosen = free_port()
        return chosen, f"port {port} is busy; using port {chosen} instead"
    return port, None


@contextlib.asynccontextmanager
async def demo_environment(
    data_dir: Path, *, port: int, orgs: int = 3
) -> AsyncIterator[GatewayUnderTest]:
    """Start the emulator and a gateway (SQLite in ``data_dir``) sharing one clock.

    ``port`` must be free (see :func:`_pick_port`). The gateway creates its API key as on a
    fresh install, ignores any ``TOKENKEEP_*`` secret or database settings of the environment,
    and runs without the proactive scheduler: the tour counts refresh grants, and a refresh
    at a moment of the scheduler's own choosing would blur the count. The emulator's
    connected app is not registered: that is the tour's first step.
    """
    async with running_gateway(
        data_dir,
        orgs=orgs,
        port=port,
        clock=OffsetClock(),
        generated_key=True,
        integration=None,
    ) as env:
        yield env


async def run_tour(env: GatewayUnderTest, console: Console) -> TourResult:
    """Run every step against ``env``, printing each as it ends; never raises for a failed step.

    A failed step that later steps depend on (registration, connecting) ends the tour; the
    rest are listed as skipped. The summary table of the six causes comes last.
    """
    result = TourResult(steps=[])
    headers = {"Authorization": f"Bearer {env.api_key.reveal()}"}
    async with httpx.AsyncClient(
        base_url=env.base_url, headers=headers, timeout=HTTP_TIMEOUT
    ) as http:
        specs = CauseTour(env, http).steps()
        for index, spec in enumerate(specs, start=1):
            step = StepResult(index, spec.title, ok=False, cause=spec.cause)
            try:
                shown = await spec.run()
                if isinstance(shown, CauseShown):
                    step.shown = shown
                else:
                    step.lines = shown
                step.ok = True
            except StepSkipped as exc:
                step.ok, step.skipped = True, str(exc)
            except StepFailed as exc:
                step.lines = [str(exc)]
            except Exception as exc:  # a demo shows ✗ and goes on, never a traceback
                step.lines = [f"{type(exc).__name__}: {exc}"]
            result.steps.append(step)
            print_step(console, step)
            if spec.required and not step.ok:
                result.skipped = [s.title for s in specs[index:]]
                console.print(f"   skipped: {', '.join(result.skipped)}")
                break
        console.print()
        console.print(summary_table(specs, result.steps))
    return result


async def _first(stop: asyncio.Event, *futures: asyncio.Future[Any]) -> bool:
    """Wait for the first of ``futures`` or ``stop``; True if ``stop`` came first (Ctrl-C).

    The futures are not cancelled here: one of them is the server's own task, which must
    finish its graceful shutdown.
    """
    waiter = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait([waiter, *futures], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    return waiter in done and not any(f in done for f in futures)


async def _demo(console: Console, *, port: int, wait: bool, data_dir: Path) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # While uvicorn serves, it also sees SIGINT/SIGTERM (and shuts the gateway down); these
    # handlers tell the demo to wind up (and see the signals while nothing serves).
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        async with demo_environment(data_dir, port=port) as env:
            console.print(
                f"[bold]tokenkeep demo[/]: the gateway at {env.base_url} and a Salesforce "
                f"emulator with {len(env.emulator.orgs)} orgs at {env.emulator.login_url}, "
                f"one process, data in {env.data_dir}\n"
            )
            if env.server is None:  # running_gateway always sets it
                raise TokenkeepError("the demo gateway has no server.")
            serving = asyncio.ensure_future(env.server.wait())
            tour = asyncio.ensure_future(run_tour(env, console))
            if await _first(stop, tour, serving) or not tour.done():
                tour.cancel()  # Ctrl-C (or the server ended) during the tour
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await tour
                console.print("interrupted; stopping")
                return 130
            result = tour.result()
            verdict = (
                "[bold green]every step passed[/]"
                if result.ok
                else "[bold red]some steps failed[/] (see ✗ above)"
            )
            not_here = [s.number for s in result.steps if s.skipped]
            if not_here:
                verdict += f" (skipped on this machine: step {', '.join(map(str, not_here))})"
            console.print(f"\n{verdict}\n")
            console.rule("the demo is ready")
            for line in ready_lines(env):
                console.print(line)
            if wait:
                console.print("Press Ctrl-C to stop (the temporary data is deleted).")
                await _first(stop, serving)
                console.print("stopping")
            return 0 if result.ok else 1
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


def run_demo(console: Console, *, port: int | None = DEFAULT_PORT, wait: bool = True) -> int:
    """``tokenkeep demo``: start everything, run the tour, then (``wait``) serve until Ctrl-C.

    Returns the exit code: 0 when every step passed, 1 when one failed, 130 when
    interrupted during the tour. The temporary data dir is removed in every case.
    """
    # Errors only: the narrative is the output (the lifecycle warns about the revoked
    # session the tour produces on purpose).
    configure_logging("console", "ERROR")
    chosen, note = _pick_port(port)
    if note:
        console.print(note)
    data_dir = Path(tempfile.mkdtemp(prefix="tokenkeep-demo-"))
    try:
        return asyncio.run(_demo(console, port=chosen, wait=wait, data_dir=data_dir))
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down
        return 130
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
