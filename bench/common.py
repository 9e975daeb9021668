"""What the issue-14 benchmarks share: their doc blocks, the foreign-load meter, goals.

Each benchmark ``bench/<name>.py`` owns one generated block of docs/PERFORMANCE.md between
``<!-- bench/<name>.py:start ... -->`` and ``<!-- bench/<name>.py:end -->``, written by
bench/proxy.py's own ``write_doc`` (its markers set for the call). Throw-away PostgreSQL
databases come from bench/oplog.py's helpers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import _children_cpu, cpu_seconds, machine, machine_busy_seconds
from oplog import _drop, _pg_database

import proxy

DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

__all__ = [
    "DOC",
    "PG_ADMIN",
    "Foreign",
    "Goal",
    "header",
    "output_options",
    "pct",
    "pg_database",
    "publish",
    "render_goals",
    "write_section",
]


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of ``bench/<name>.py``'s generated block."""
    return (
        f"<!-- bench/{name}.py:start (generated; edits inside are overwritten) -->",
        f"<!-- bench/{name}.py:end -->",
    )


def write_section(name: str, title: str, section: str, doc: Path = DOC) -> None:
    """Replace ``bench/<name>.py``'s block of ``doc`` (appended under ``## title`` at the
    end of the file the first time), with bench/proxy.py's ``write_doc``."""
    start, end = markers(name)
    text = doc.read_text() if doc.exists() else "# Performance\n"
    if start not in text or end not in text:
        doc.write_text(text.rstrip() + f"\n\n## {title}\n\n{start}\n{end}\n")
    saved = proxy.MARK_START, proxy.MARK_END
    proxy.MARK_START, proxy.MARK_END = start, end
    try:
        proxy.write_doc(doc, section)
    finally:
        proxy.MARK_START, proxy.MARK_END = saved


def header(command: str, extra: str = "") -> str:
    """``Measured <date> by `<command>` on <machine>.`` for a block's first paragraph."""
    from tokenkeep.clock import SystemClock

    m = machine()
    return (
        f"Measured {SystemClock().now():%Y-%m-%d %H:%M} UTC by `{command}`. Machine: "
        f"{m['cores']} cores, {m['cpu']}, {m['memory']}, Linux {m['kernel']}; {m['versions']}."
        + (f" {extra}" if extra else "")
    )


@dataclass(frozen=True)
class Goal:
    """One goal of the issue: what, measured, target text, met."""

    what: str
    measured: str
    target: str
    met: bool


def render_goals(goals: Sequence[Goal]) -> list[str]:
    """The goals table: met or MISSED, plainly."""
    lines = ["| goal | measured | target | |", "|---|---|---|---|"]
    lines += [
        f"| {g.what} | {g.measured} | {g.target} | {'met' if g.met else 'MISSED'} |" for g in goals
    ]
    return lines


def pct(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank; NaN when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Foreign:
    """Cores that other processes (and steal) used while a measurement ran: the machine's
    busy CPU minus the benchmark's own processes (``pids``, this process and its reaped
    children: a pid alive at the start and reaped by the end counts once)."""

    pids: list[int] = field(default_factory=list)
    cores: float = float("nan")

    @contextlib.contextmanager
    def measuring(self) -> Iterator[Foreign]:
        def own() -> float:
            return time.process_time() + _children_cpu()

        busy, ours, wall = machine_busy_seconds(), cpu_seconds(self.pids) + own(), time.monotonic()
        try:
            yield self
        finally:
            spent = cpu_seconds(self.pids) + own() - ours
            elapsed = max(1e-6, time.monotonic() - wall)
            self.cores = max(0.0, (machine_busy_seconds() - busy - spent) / elapsed)


@contextlib.contextmanager
def pg_database(admin_url: str = PG_ADMIN) -> Iterator[str]:
    """A throw-away PostgreSQL database (dropped at the end); its SQLAlchemy URL."""
    url, name = _pg_database(admin_url)
    try:
        yield url
    finally:
        _drop(admin_url, name)


def output_options(parser: argparse.ArgumentParser, quick: str, *, tools: bool = True) -> None:
    """The options every benchmark has: ``--quick`` (``quick`` says what it runs),
    ``--doc``, ``--json`` and (``tools``: it needs nginx/wrk) ``--install``."""
    parser.add_argument("--quick", action="store_true", help=f"{quick}, nothing written")
    parser.add_argument("--doc", default=None, help="the doc to write ('-': print only)")
    parser.add_argument("--json", default=None, help="write the raw results here")
    if tools:
        parser.add_argument("--install", action="store_true", help="apt-get nginx/wrk if missing")


def publish(args: argparse.Namespace, name: str, title: str, section: str, raw: object) -> None:
    """Print the block; write the raw figures (``--json``) and the doc (unless ``--doc -``;
    ``--quick`` writes no doc unless one is named)."""
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))
    doc = "-" if args.quick and args.doc is None else args.doc
    if doc != "-":
        write_section(name, title, section, *([Path(doc)] if doc else []))
