"""Scheduler at scale (issue 14 §4): N connections, D of them due, 2 scheduler processes.

PostgreSQL: ``--connections`` rows (default 1,000,000) bulk-loaded with ``COPY``, each
encrypted by the store's own code (bench/bulk.py's rule: a ciphertext is bound to its row);
``--due`` of them due now, the rest due over the next 24 h. SQLite: ``--sqlite-connections``
(default 100,000) inserted in batches. Then 2 ``tests/lifecycle/scheduler_worker.py``
processes (a RefreshScheduler each, system clock) refresh the due rows against the
emulator's token endpoint (in this process, no latency added). Measured: the claim of one
batch (the scheduler's one ``UPDATE ... RETURNING``, median of 5, on the full table), the
wall time until every due row is refreshed, the steady-state rate (the middle 80 % of the
refreshes, by their operation-log times), CPU per refresh of the schedulers and of the
database's backends (``/proc`` of the backends in ``pg_stat_activity``), and the plan of
the due-connection query (``EXPLAIN ANALYZE``). Baseline, same run: the token endpoint
alone, called by one bare ``TokenEndpointClient`` loop from this process (16 at a time).
Correctness, checked in every run: no connection refreshed twice (operation log), one
refresh grant per refresh, every due row at version 2, no other row touched.

    python bench/scheduler.py [--connections 1000000] [--due 20000]
        [--sqlite-connections 100000] [--sqlite-due 5000] [--doc -]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from common import Foreign, Goal, header, output_options, pct, pg_database, publish, render_goals
from harness import cpu_seconds
from sqlalchemy import func, insert, select, text

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.oauth.models import oauth_app_for
from tokenkeep.observability.logging import configure_logging
from tokenkeep.secret import Secret
from tokenkeep.store import Database, Store, verify_keyring
from tokenkeep.store.connection_tokens import token_columns
from tokenkeep.store.models import ConnectionRow, OperationRow
from tokenkeep.store.schedule import due_query

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "tests" / "lifecycle"))
from lifecycle_support import (  # noqa: E402
    connect,
    register_integration,
    start_scheduler_worker,
    stop_scheduler_worker,
    token_client,
)

TABLE = ConnectionRow.__table__
BATCH = 5000
SCHEDULERS = 2
BATCH_SIZE = 100


def _rows(template: dict[str, Any], keyring: Keyring, start: int, stop: int, due: int) -> list:
    now = SystemClock().now()
    tokens = template.pop("_tokens")
    rows = []
    for n in range(start, stop):
        cid = f"b{n:07d}"
        later = now + timedelta(seconds=60 + (n * 86_400) // max(1, stop))
        rows.append(
            {
                **template,
                "id": cid,
                **token_columns(keyring, cid, *tokens),
                "next_refresh_at": now - timedelta(seconds=1 + n % 60) if n < due else later,
            }
        )
    template["_tokens"] = tokens
    return rows


async def _load(store: Store, template: dict[str, Any], count: int, due: int) -> float:
    """Bulk-load ``count`` rows (the first ``due`` due now); returns seconds taken."""
    started = time.monotonic()
    columns = [c.name for c in TABLE.columns]
    if store.db.dialect == "postgresql":
        dsn = store.db.libpq_url()
        with psycopg.connect(dsn) as conn, conn.cursor() as cur:
            with cur.copy(f"COPY connections ({', '.join(columns)}) FROM STDIN") as copy:
                for start in range(0, count, BATCH):
                    for row in _rows(
                        template, store.keyring, start, min(count, start + BATCH), due
                    ):
                        copy.write_row(
                            [
                                json.dumps(row[c]) if isinstance(row[c], dict) else row[c]
                                for c in columns
                            ]
                        )
            cur.execute("ANALYZE connections")
    else:
        for start in range(0, count, BATCH):
            rows = _rows(template, store.keyring, start, min(count, start + BATCH), due)
            async with store.db.write() as session:
                await session.execute(insert(TABLE), rows)
    return time.monotonic() - started


async def _explain(store: Store) -> list[str]:
    """The plan of the due-connection query as a claim runs it (rolled back)."""
    query = due_query(
        SystemClock().now(), BATCH_SIZE, locking=store.db.dialect == "postgresql"
    ).compile(store.db.engine.sync_engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN ANALYZE " if store.db.dialect == "postgresql" else "EXPLAIN QUERY PLAN "
    async with store.db.engine.connect() as conn:
        result = await conn.execute(text(prefix + str(query)))
        plan = [" ".join(str(v) for v in r) for r in result]
        await conn.rollback()
    return plan


async def _claim_ms(store: Store) -> float:
    """Median milliseconds of one batch's claim (claimed, then given back), on the full table."""
    times = []
    for _ in range(5):
        started = time.perf_counter()
        rows = await store.schedule.claim_due(
            now=SystemClock().now(), limit=BATCH_SIZE, owner="claim:bench", seconds=60
        )
        times.append((time.perf_counter() - started) * 1000)
        await store.schedule.release_claims([r.id for r in rows], "claim:bench")
    return statistics.median(times)


async def _baseline(emu: Emulator, store: Store, calls: int) -> float:
    """Refresh grants per second of a bare client loop (16 at a time), no store at all."""
    integration = await store.integrations.get("sf", with_secrets=True)
    app = oauth_app_for(integration)
    async with store.db.read() as session:
        row = (await session.execute(select(TABLE).where(TABLE.c.id == "b0000000"))).one()
    refresh = Secret(
        store.keyring.decrypt(
            row.refresh_token_enc, row_id=row.id, field="connections.refresh_token"
        )
    )
    gate = asyncio.Semaphore(16)
    async with token_client(SystemClock()) as client:

        async def one() -> None:
            async with gate:
                await client.refresh(app, refresh)

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(calls)))
    return calls / (time.monotonic() - started)


def _backend_cpu(dsn: str, database: str, seen: dict[int, float]) -> None:
    """The CPU seconds of every backend of ``database`` now (``seen``: pid -> latest)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        ]
    for pid in pids:
        cpu = cpu_seconds([pid])
        if cpu > 0:
            seen[pid] = max(seen.get(pid, 0.0), cpu)


async def _schedule(
    store: Store, url: str, work: Path, keyring: Keyring, *, due: int, concurrency: int
) -> dict[str, Any]:
    """2 scheduler processes until every due row is refreshed: the figures."""
    pg = store.db.dialect == "postgresql"
    dsn = store.db.libpq_url() if pg else ""
    database = dsn.rsplit("/", 1)[1] if pg else ""
    procs = [
        await start_scheduler_worker(
            {
                "db_url": url,
                "keys": keyring.export().reveal(),
                "owner": f"scheduler-{i}",
                "interval": 0.5,
                "batch_size": BATCH_SIZE,
                "concurrency": concurrency,
                "data_dir": str(work / f"data-{i}"),
            },
            work / f"scheduler-{i}.log",
        )
        for i in range(SCHEDULERS)
    ]
    backends: dict[int, float] = {}
    left_query = select(func.count()).where(TABLE.c.version == 1, TABLE.c.id < f"b{due:07d}")
    foreign = Foreign(pids=[p.pid for p in procs])
    cpu_at_start = cpu_seconds(foreign.pids)  # start-up (imports) is not the refreshes' cost
    try:
        with foreign.measuring():
            started = time.monotonic()
            for _ in range(3600):
                if pg:
                    await asyncio.to_thread(_backend_cpu, dsn, database, backends)
                async with store.db.read() as session:
                    if not await session.scalar(left_query):
                        break
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - started
    finally:
        outputs = [await stop_scheduler_worker(p) for p in procs]
    async with store.db.read() as session:
        times = sorted(
            r.timestamp()
            for r in (
                await session.scalars(
                    select(OperationRow.at).where(
                        OperationRow.kind == "refresh", OperationRow.outcome == "ok"
                    )
                )
            )
        )
        per_connection = (
            await session.execute(
                select(func.count()).select_from(
                    select(OperationRow.connection_id)
                    .where(OperationRow.kind == "refresh")
                    .group_by(OperationRow.connection_id)
                    .having(func.count() > 1)
                    .subquery()
                )
            )
        ).scalar_one()
        versions = dict(
            (
                await session.execute(
                    select(TABLE.c.version, func.count()).group_by(TABLE.c.version)
                )
            ).all()
        )
    lo, hi = pct(times, 10), pct(times, 90)
    middle = sum(1 for t in times if lo <= t <= hi)
    cpu = sum(o["cpu_seconds"] for o in outputs) - cpu_at_start
    return {
        "refreshed": len(times),
        "seconds": elapsed,
        "rate": len(times) / elapsed,
        "steady_rate": middle / max(1e-6, hi - lo),
        "duplicates": per_connection,
        "fenced": sum(o["fenced"] for o in outputs),
        "per_process": [o["refreshes"] for o in outputs],
        "versions": {str(k): v for k, v in versions.items()},
        "scheduler_cpu_ms_per_refresh": 1000 * cpu / max(1, len(times)),
        "db_cpu_ms_per_refresh": 1000 * sum(backends.values()) / max(1, len(times)) if pg else None,
        "foreign": foreign.cores,
    }


async def run_engine(
    url: str, count: int, due: int, concurrency: int, baseline_calls: int
) -> dict[str, Any]:
    clock = SystemClock()
    keyring = Keyring.generate("k1")
    db = Database(url, clock=clock)
    await db.upgrade()
    result: dict[str, Any] = {"connections": count, "due": due, "concurrency": concurrency}
    try:
        await verify_keyring(db, keyring)
        store = Store(db=db, keyring=keyring, clock=clock)
        async with Emulator.running(orgs=1, clock=clock) as emu, token_client(clock) as client:
            emu.admin.patch_org(emu.orgs[0].org_id, {"session_timeout_seconds": 7200})
            await register_integration(store, emu)
            made = await connect(store, emu, client, emu.orgs[0].users[0], "template", clock=clock)
            async with store.db.read() as session:
                template = dict(
                    (await session.execute(select(TABLE).where(TABLE.c.id == "template")))
                    .one()
                    ._mapping
                )
            got = await store.connections.get("template", with_credentials=True)
            if got.credentials is None or got.credentials.refresh_token is None:
                raise RuntimeError("the template connection has no refresh token")
            template["_tokens"] = (got.credentials.access_token, got.credentials.refresh_token)
            await store.connections.delete(made.id)
            result["load_seconds"] = await _load(store, template, count, due)
            result["plan"] = await _explain(store)
            result["claim_ms"] = await _claim_ms(store)
            result["baseline_rate"] = await _baseline(emu, store, baseline_calls)
            grants_before = len(emu.admin.requests(grant_type="refresh_token"))
            with tempfile.TemporaryDirectory() as work:
                result.update(
                    await _schedule(
                        store, url, Path(work), keyring, due=due, concurrency=concurrency
                    )
                )
            result["grants"] = len(emu.admin.requests(grant_type="refresh_token")) - grants_before
    finally:
        await db.close()
    result["ok"] = (
        result["duplicates"] == 0
        and result["fenced"] == 0
        and result["refreshed"] == result["grants"] == due
        and result["versions"] == ({"1": count - due, "2": due} if count > due else {"2": due})
    )
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with pg_database() as url:
        results["postgresql"] = asyncio.run(
            run_engine(url, args.connections, args.due, args.concurrency, args.baseline_calls)
        )
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = asyncio.run(
            run_engine(
                f"sqlite+aiosqlite:///{tmp}/tokenkeep.db",
                args.sqlite_connections,
                args.sqlite_due,
                args.concurrency,
                args.baseline_calls,
            )
        )
    return results


def goals(results: dict[str, Any]) -> list[Goal]:
    out = []
    for engine, r in results.items():
        out.append(Goal(f"{engine}: duplicate refreshes", str(r["duplicates"]), "0", r["ok"]))
        indexed = any("ix_connections_" in line for line in r["plan"])
        out.append(
            Goal(f"{engine}: due query uses the index", "yes" if indexed else "no", "yes", indexed)
        )
    return out


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    command = (
        f"python bench/scheduler.py --connections {args.connections} --due {args.due} "
        f"--sqlite-connections {args.sqlite_connections} --sqlite-due {args.sqlite_due}"
    )
    lines = [
        header(
            command,
            f"{SCHEDULERS} scheduler processes (batch {BATCH_SIZE}, concurrency "
            f"{args.concurrency} each), the emulator's token endpoint in the benchmark's "
            "process, no latency added.",
        ),
        "",
        "| engine | rows | due | load | claim of a batch (median) | all due refreshed | "
        "refreshes/s (steady) | baseline: token endpoint alone | ratio | scheduler CPU / "
        "refresh | DB CPU / refresh | duplicates | foreign load (cores) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for engine, r in results.items():
        db_cpu = (
            f"{r['db_cpu_ms_per_refresh']:.1f} ms"
            if r["db_cpu_ms_per_refresh"]
            else "n/a (in the schedulers)"
        )
        lines.append(
            f"| {engine} | {r['connections']:,} | {r['due']:,} | {r['load_seconds']:.0f} s | "
            f"{r['claim_ms']:.1f} ms | {r['seconds']:.1f} s | "
            f"{r['rate']:.0f} ({r['steady_rate']:.0f}) | "
            f"{r['baseline_rate']:.0f}/s | {r['steady_rate'] / r['baseline_rate']:.2f}x | "
            f"{r['scheduler_cpu_ms_per_refresh']:.1f} ms | {db_cpu} | {r['duplicates']} | "
            f"{r['foreign']:.2f} |"
        )
    for engine, r in results.items():
        lines += [
            "",
            f"The due-connection query on {engine} (`EXPLAIN`, {r['connections']:,} rows):",
            "",
            "```",
        ]
        lines += r["plan"]
        lines += ["```"]
    lines += [""]
    lines += render_goals(goals(results))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=20_000)
    parser.add_argument("--sqlite-connections", type=int, default=100_000)
    parser.add_argument("--sqlite-due", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--baseline-calls", type=int, default=2000)
    output_options(
        parser, "20,000 rows / 500 due on PostgreSQL, 5,000 / 200 on SQLite", tools=False
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.connections, args.due = min(args.connections, 20_000), min(args.due, 500)
        args.sqlite_connections, args.sqlite_due = (
            min(args.sqlite_connections, 5000),
            min(args.sqlite_due, 200),
        )
        args.baseline_calls = 200
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(level="WARNING")
    results = run(args)
    section = render(results, args)
    publish(args, "scheduler", "Scheduler at scale (bench/scheduler.py)", section, results)
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
