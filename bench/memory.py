"""Memory (issue 14 §5): the gateway's RSS idle, with 100,000 connections in its database,
and during a 100 MB streamed upload (bench/upload.py).

(a) ``tokenkeep serve`` (1 worker, SQLite) with one imported connection, after one
    proxied call: RSS 1 s later. (b) The same with 100,000 more connections in its
    database (bench/bulk.py: each row encrypted by the store's own code), after one
    proxied call and one ``GET /connections?limit=100``. (c) bench/upload.py: a 100 MiB
    CSV streamed through the proxy to the emulator, RSS sampled every 20 ms; peak minus
    idle must stay under 30 MB.

    python bench/memory.py [--connections 100000] [--upload-mb 100] [--doc -]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bulk import clone_connections
from common import Goal, header, output_options, publish, render_goals
from harness import (
    ACCESS_TOKEN,
    QUERY,
    QUERY_PATH,
    REFRESH_TOKEN,
    Processes,
    ensure_tools,
    fetch,
    prepare_tokenkeep,
    query_body,
    rss_bytes,
    signals_unwind,
    start_tokenkeep,
    start_upstream,
)
from upload import measure_upload

from tokenkeep.config import load_settings
from tokenkeep.runtime import Gateway

UPLOAD_GOAL_MB = 30.0


async def _fill(data_dir: Path, template_id: str, count: int) -> float:
    started = time.monotonic()
    settings = load_settings(data_dir=data_dir, database_url=None, scheduler_enabled=False)
    async with Gateway(settings) as gateway:
        await clone_connections(
            gateway.store,
            template_id,
            count,
            access_token=ACCESS_TOKEN,
            refresh_token=REFRESH_TOKEN,
        )
    return time.monotonic() - started


def _rss_after_use(processes: Processes, data: Any, name: str, listing: bool) -> float:
    port, proc = start_tokenkeep(processes, data, name)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {data.api_key}"}
    if fetch(f"{base}/c/{data.connection_id}{QUERY_PATH}?{QUERY}", auth) != query_body():
        raise RuntimeError(f"{name}: unexpected body")
    if listing:
        page = json.loads(fetch(f"{base}/connections?limit=100", auth))
        if len(page["data"]) != 100:
            raise RuntimeError(f"{name}: GET /connections did not list 100")
    time.sleep(1.0)
    return rss_bytes([proc.pid]) / 1e6


def run(connections: int, upload_mb: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tk-bench-memory-") as tmp, signals_unwind():
        workdir = Path(tmp)
        processes = Processes(workdir)
        try:
            upstream = f"http://127.0.0.1:{start_upstream(processes, workdir)}"
            results: dict[str, Any] = {}
            for name, count in (("empty", 0), ("full", connections)):
                data = prepare_tokenkeep(
                    workdir / name,
                    instance_url=upstream,
                    login_url=upstream,
                    access_token=ACCESS_TOKEN,
                    refresh_token=REFRESH_TOKEN,
                )
                if count:
                    results["fill_s"] = asyncio.run(
                        _fill(workdir / name, data.connection_id, count)
                    )
                results[f"rss_{name}_mb"] = _rss_after_use(
                    processes, data, f"memory-{name}", listing=bool(count)
                )
            results["upload"] = measure_upload(processes, workdir / "upload", upload_mb)
        finally:
            processes.stop_all()
    results["connections"] = connections
    up = results["upload"]
    results["upload_growth_mb"] = up["rss_peak_mb"] - up["rss_idle_mb"]
    return results


def goals(r: dict[str, Any]) -> list[Goal]:
    return [
        Goal(
            f"RSS growth during a {r['upload']['size_mb']:.0f} MiB streamed upload (peak - idle)",
            f"+{r['upload_growth_mb']:.1f} MB",
            f"< +{UPLOAD_GOAL_MB:.0f} MB",
            r["upload_growth_mb"] < UPLOAD_GOAL_MB,
        )
    ]


def render(r: dict[str, Any], args: argparse.Namespace) -> str:
    up = r["upload"]
    lines = [
        header(
            f"python bench/memory.py --connections {args.connections} --upload-mb {args.upload_mb}"
        ),
        "",
        "| gateway (1 worker, SQLite) | RSS |",
        "|---|---|",
        f"| idle, 1 connection, after one proxied call | {r['rss_empty_mb']:.0f} MB |",
        f"| idle, {r['connections'] + 1:,} connections (inserted in {r['fill_s']:.0f} s), after "
        f"one proxied call and `GET /connections?limit=100` | {r['rss_full_mb']:.0f} MB |",
        f"| before the upload (its own gateway) | {up['rss_idle_mb']:.0f} MB |",
        f"| peak during {up['size_mb']:.0f} MiB streamed at {up['mb_per_s']:.0f} MB/s | "
        f"{up['rss_peak_mb']:.0f} MB |",
        "",
        f"{r['connections']:,} connections in the database: "
        f"{r['rss_full_mb'] - r['rss_empty_mb']:+.1f} MB.",
        "",
    ]
    lines += render_goals(goals(r))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--upload-mb", type=int, default=100)
    output_options(parser, "2,000 connections, 10 MiB")
    args = parser.parse_args(argv)
    if args.quick:
        args.connections, args.upload_mb = 2000, 10
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools(install=args.install)
    results = run(args.connections, args.upload_mb)
    section = render(results, args)
    publish(args, "memory", "Memory (bench/memory.py)", section, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
