"""Operation-log benchmark: what logging every proxied call costs the proxy's process.

Run::

    python bench/oplog.py [--calls 50000] [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Measures, in this process, with CPU time (``time.process_time``: every thread of the process,
so aiosqlite's worker thread counts too):

  (a) recorder, no log    ``CallRecorder.finish`` for one answered call, without a queue
                          (the structlog line off, as in bench/proxy.py: log level WARNING)
  (b) recorder + queue    the same with the operation-log queue: what the hot path pays
  (c) flush per row       the queue's batched write of those entries, on SQLite (a fresh data
                          dir) and, with ``--pg``, on PostgreSQL (a throw-away database)

(b) minus (a) is the per-call cost on the request path; (c) is CPU the same process spends in the
background per call (it competes with the proxy for the core under load). The figures go to
the "Operation log" section of docs/PERFORMANCE.md (``--doc -`` to skip).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import structlog

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PERFORMANCE.md"
BEGIN, END = "<!-- oplog:begin -->", "<!-- oplog:end -->"


def _call(i: int) -> Any:
    from tokenkeep.proxy.respond import Call

    call = Call(f"{i:016x}", "GET", "/services/data/v60.0/query")
    call.connection_id, call.org_id, call.user_id = "acme", "00D5g000004ABCDEAA", "0055g00000"
    call.integration, call.status, call.answered_by = "salesforce", 200, "salesforce"
    return call


def _recorder(queue: Any) -> Any:
    from tokenkeep.clock import SystemClock
    from tokenkeep.proxy.observe import CallRecorder

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return CallRecorder(SystemClock(), structlog.get_logger("bench"), oplog=queue)


def hot_path(calls: int) -> tuple[float, float]:
    """µs per call of ``finish`` without and with the queue."""
    from tokenkeep.clock import SystemClock
    from tokenkeep.observability.oplog import OperationQueue

    async def sink(rows: list[dict[str, Any]]) -> None:
        return None

    scope = {"raw_path": b"/c/acme/services/data/v60.0/query"}
    results = []
    for queue in (None, OperationQueue(sink, clock=SystemClock(), capacity=calls + 1)):
        recorder = _recorder(queue)
        prepared = [_call(i) for i in range(calls)]
        started = time.process_time()
        for call in prepared:
            recorder.finish(call, scope, 0.001)
        results.append((time.process_time() - started) / calls * 1e6)
    return results[0], results[1]


async def flush_cost(calls: int, database_url: str | None) -> float:
    """CPU µs per row of the queue's flush into a real store."""
    from tokenkeep.clock import SystemClock
    from tokenkeep.config import load_settings
    from tokenkeep.observability.oplog import OperationQueue
    from tokenkeep.store import open_store

    data_dir = tempfile.mkdtemp(prefix="tk-oplog-")
    overrides: dict[str, Any] = {"data_dir": data_dir}
    if database_url:
        overrides["database_url"] = database_url
    store = await open_store(load_settings(**overrides), clock=SystemClock())
    try:
        queue = OperationQueue(
            store.operations.insert_many, clock=SystemClock(), capacity=calls + 1
        )
        recorder = _recorder(queue)
        scope = {"raw_path": b"/"}
        for i in range(calls):
            recorder.finish(_call(i), scope, 0.001)
        started = time.process_time()
        await queue.flush_all()
        return (time.process_time() - started) / calls * 1e6
    finally:
        await store.close()


def _pg_database(admin_url: str) -> tuple[str, str]:
    name = "tk_oplog_bench_" + secrets.token_hex(4)
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def _drop(admin_url: str, name: str) -> None:
    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def render(calls: int, bare: float, queued: float, flushes: dict[str, float]) -> str:
    from tokenkeep.clock import SystemClock

    lines = [
        BEGIN,
        f"`python bench/oplog.py --calls {calls}` — {SystemClock().now():%Y-%m-%d %H:%M} UTC, "
        "this machine (2 cores), CPU time per proxied call:",
        "",
        "| what | µs per call |",
        "|---|---|",
        f"| `CallRecorder.finish`, no operation log (baseline) | {bare:.2f} |",
        f"| `CallRecorder.finish` + queue (the request path) | {queued:.2f} |",
        f"| **added on the request path** | **{queued - bare:.2f}** |",
    ]
    for engine, cost in flushes.items():
        lines.append(f"| batched flush, {engine} (background, same process) | {cost:.1f} |")
    lines.append(END)
    return "\n".join(lines)


def write_doc(section: str) -> None:
    text = DOC.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## Operation log\n\n" + section + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="operation-log cost per proxied call")
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--pg", default=None, help="admin URL of a PostgreSQL to use")
    parser.add_argument("--doc", default=str(DOC), help="'-' to skip docs/PERFORMANCE.md")
    args = parser.parse_args(argv)
    bare, queued = hot_path(args.calls)
    flushes = {"SQLite": asyncio.run(flush_cost(args.calls, None))}
    if args.pg:
        url, name = _pg_database(args.pg)
        try:
            flushes["PostgreSQL"] = asyncio.run(flush_cost(args.calls, url))
        finally:
            _drop(args.pg, name)
    section = render(args.calls, bare, queued, flushes)
    print(section)
    if args.doc != "-":
        write_doc(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
