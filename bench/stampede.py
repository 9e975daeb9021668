"""Refresh stampede (issue 14 §3): one expired connection, N concurrent callers over P
processes on PostgreSQL, the emulator's token endpoint answering in 200 ms.

Each worker process is ``tests/lifecycle/stampede_worker.py`` (its own store, token client
and coordinator, like a gateway process); they are released together and every caller's
wait is measured from its process's release to its answer. Run twice in one go, on two
connections expired the same way: the waiters in the processes that do not hold the lease
poll the row every 10 ms (``notify`` off), then are woken by the holder's NOTIFY
(lifecycle/wakeup.py). Correctness, checked in every run: exactly one refresh_token grant
per connection, every caller answered, every caller got the stored token.

    python bench/stampede.py [--callers 10000] [--processes 4] [--latency-ms 200] [--doc -]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import (
    Foreign,
    Goal,
    header,
    output_options,
    pct,
    pg_database,
    publish,
    render_goals,
)
from sqlalchemy import update

from tokenkeep.clock import SystemClock
from tokenkeep.crypto import Keyring
from tokenkeep.emulator import Emulator
from tokenkeep.store import Database, Store, verify_keyring
from tokenkeep.store.models import ConnectionRow

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT / "tests" / "lifecycle"))
from lifecycle_support import connect, register_integration, token_client  # noqa: E402

WORKER = ROOT / "tests" / "lifecycle" / "stampede_worker.py"
FLOOR = Path(__file__).with_name("stampede_floor.py")
SLACK_MS = 50.0  # the goal: p99 wait <= token latency + 50 ms


def _grants(emu: Emulator) -> int:
    return len(emu.admin.requests(grant_type="refresh_token"))


async def _expire(store: Store, connection_id: str, clock: SystemClock) -> None:
    async with store.db.write() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.id == connection_id)
            .values(expires_at=clock.now(), next_refresh_at=clock.now() - timedelta(seconds=1))
        )


async def _stampede(
    emu: Emulator,
    db_url: str,
    keyring: Keyring,
    connection_id: str,
    *,
    callers: int,
    processes: int,
    notify: bool,
) -> dict[str, Any]:
    args = {
        "db_url": db_url,
        "keys": keyring.export().reveal(),
        "connection_id": connection_id,
        "calls": callers // processes,
        "notify": notify,
    }
    outputs, before, foreign = await _released_together(
        [
            [str(WORKER), json.dumps({**args, "owner": f"bench-{i}", "warm_id": f"warm-{i}"})]
            for i in range(processes)
        ],
        before_release=lambda: _grants(emu),
    )
    waits = [ms for o in outputs for ms in o["waits_ms"]]
    return {
        "token_calls": _grants(emu) - (before or 0),
        "callers": sum(len(o["waits_ms"]) for o in outputs),
        "ok": sum(o["ok"] for o in outputs),
        "errors": sorted({e for o in outputs for e in o["errors"]}),
        "refreshes": sum(o["refreshes"] for o in outputs),
        "fingerprints": sorted({fp for o in outputs for fp in o["fingerprints"]}),
        "p50": pct(waits, 50),
        "p99": pct(waits, 99),
        "max": max(waits, default=float("nan")),
        "foreign": foreign,
    }


async def _released_together(
    commands: list[list[str]], before_release: Callable[[], int] | None = None
) -> tuple[list[dict[str, Any]], int | None, float]:
    """Start one Python process per command, wait for each one's ``ready``, release them
    together (a line on stdin); return each one's last JSON line, ``before_release()``
    taken just before the release, and the foreign load during the run."""
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for command in commands
    ]
    outputs: list[dict[str, Any]] = []
    try:
        for w in workers:
            if w.stdout is None:
                raise RuntimeError("no pipe")
            for _ in range(100):  # the warm-up's log lines come first
                line = await asyncio.wait_for(w.stdout.readline(), timeout=60)
                if line.strip() in (b"ready", b""):
                    break
            if line.strip() != b"ready":
                raise RuntimeError(f"worker did not start: {line!r}")
        before = before_release() if before_release is not None else None
        foreign = Foreign(pids=[w.pid for w in workers])
        with foreign.measuring():
            for w in workers:  # released together
                if w.stdin is None:
                    raise RuntimeError("no pipe")
                w.stdin.write(b"go\n")
                await w.stdin.drain()
            for w in workers:
                out, err = await asyncio.wait_for(w.communicate(), timeout=120)
                if w.returncode != 0:
                    raise RuntimeError(f"worker failed: {err.decode()[-2000:]}")
                outputs.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for w in workers:
            if w.returncode is None:
                w.kill()
                await w.wait()
    return outputs, before, foreign.cores


async def _floor(callers: int, processes: int, latency_ms: float) -> dict[str, Any]:
    """The same release, callers and processes with nothing but asyncio (stampede_floor.py)."""
    args = json.dumps({"calls": callers // processes, "latency_ms": latency_ms})
    outputs, _, foreign = await _released_together([[str(FLOOR), args]] * processes)
    waits = [ms for o in outputs for ms in o["waits_ms"]]
    return {
        "callers": len(waits),
        "p50": pct(waits, 50),
        "p99": pct(waits, 99),
        "max": max(waits, default=float("nan")),
        "foreign": foreign,
    }


async def run(callers: int, processes: int, latency_ms: float) -> dict[str, Any]:
    clock = SystemClock()
    keyring = Keyring.generate("k1")
    results: dict[str, Any] = {}
    with pg_database() as db_url:
        db = Database(db_url, clock=clock)
        await db.upgrade()
        try:
            await verify_keyring(db, keyring)
            store = Store(db=db, keyring=keyring, clock=clock)
            # One user per connection (Salesforce keeps 5 refresh tokens per user and app).
            async with (
                Emulator.running(orgs=processes // 2 + 1) as emu,
                token_client(clock) as client,
            ):
                await register_integration(store, emu)
                users = [u for org in emu.orgs for u in org.users]
                ids = ["c-poll", "c-notify"] + [f"warm-{i}" for i in range(processes)]
                for cid, user in zip(ids, users, strict=False):
                    await connect(store, emu, client, user, cid, clock=clock)
                emu.admin.advance_clock(7300)  # both sessions expired at Salesforce
                emu.admin.add_fault(
                    target="token", kind="latency", latency_seconds=latency_ms / 1000
                )
                for mode in ("poll", "notify"):
                    cid = f"c-{mode}"
                    await _expire(store, cid, clock)
                    result = await _stampede(
                        emu,
                        db_url,
                        keyring,
                        cid,
                        callers=callers,
                        processes=processes,
                        notify=mode == "notify",
                    )
                    stored = await store.connections.get(cid, with_credentials=True)
                    if stored.credentials is None:
                        raise RuntimeError("no credentials stored")
                    result["served_stored_token"] = result["fingerprints"] == [
                        stored.credentials.access_token.fingerprint
                    ]
                    result["version"] = stored.version
                    del result["fingerprints"]
                    results[mode] = result
                results["floor"] = await _floor(callers, processes, latency_ms)
        finally:
            await db.close()
    return results


def goals(results: dict[str, Any], latency_ms: float) -> list[Goal]:
    out = []
    for mode in ("poll", "notify"):
        r = results[mode]
        out.append(
            Goal(
                f"{mode}: token calls",
                f"{r['token_calls']}",
                "exactly 1",
                r["token_calls"] == 1 and r["ok"] == r["callers"] and r["served_stored_token"],
            )
        )
        out.append(
            Goal(
                f"{mode}: p99 caller wait",
                f"{r['p99']:.0f} ms",
                f"≤ {latency_ms + SLACK_MS:.0f} ms",
                r["p99"] <= latency_ms + SLACK_MS,
            )
        )
    return out


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        header(
            f"python bench/stampede.py --callers {args.callers} --processes {args.processes}",
            f"PostgreSQL 15 on loopback, emulator token latency {args.latency_ms:.0f} ms.",
        ),
        "",
        "| waiters in other processes | callers | answered | token calls | p50 wait | "
        "p99 wait | max | foreign load (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode, label in (("poll", "poll every 10 ms"), ("notify", "LISTEN/NOTIFY")):
        r = results[mode]
        lines.append(
            f"| {label} | {r['callers']} | {r['ok']} | {r['token_calls']} | {r['p50']:.0f} ms | "
            f"{r['p99']:.0f} ms | {r['max']:.0f} ms | {r['foreign']:.2f} |"
        )
    f = results["floor"]
    lines.append(
        f"| (floor) asyncio alone: each process's callers join one {args.latency_ms:.0f} ms "
        f"task, no database, no HTTP | {f['callers']} | {f['callers']} | - | {f['p50']:.0f} ms | "
        f"{f['p99']:.0f} ms | {f['max']:.0f} ms | {f['foreign']:.2f} |"
    )
    ratio = results["notify"]["p99"] / max(1e-9, results["poll"]["p99"])
    over_floor = results["notify"]["p99"] - f["p99"]
    lines += [
        "",
        f"p99 notify / poll: {ratio:.2f} times. p99 notify over the asyncio floor: "
        f"{over_floor:+.0f} ms (the floor's p99 over the token latency: "
        f"{f['p99'] - args.latency_ms:+.0f} ms).",
        "",
    ]
    lines += render_goals(goals(results, args.latency_ms))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    output_options(parser, "200 callers, 2 processes", tools=False)
    args = parser.parse_args(argv)
    if args.quick:
        args.callers, args.processes = min(args.callers, 200), 2
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(run(args.callers, args.processes, args.latency_ms))
    section = render(results, args)
    publish(args, "stampede", "Refresh stampede (bench/stampede.py)", section, results)
    ok = all(
        results[m]["token_calls"] == 1 and not results[m]["errors"] for m in ("poll", "notify")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
