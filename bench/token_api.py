"""Direct-mode token API (issue 14 §2): ``GET /connections/{id}/token`` on a fresh token
with wrk at c32, against the minimal Python proxy (bench/minimal_proxy.py) in the same run.

Both come from bench/proxy.py's set-ups (``start_targets``): the nginx upstream, the
minimal proxy, and ``tokenkeep serve`` (1 worker, SQLite) with an imported connection
whose token is valid for days. The token is served from the coordinator's in-process
cache (its row re-read at most every 5 s, docs/PERFORMANCE.md). Correctness, checked: the
answer carries the imported token, and the stored version is unchanged after the load (no
refresh happened).

    python bench/token_api.py [--duration 10] [--rounds 3] [--doc -]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import Goal, header, output_options, publish, render_goals
from harness import ACCESS_TOKEN, Processes, ensure_tools, fetch, run_wrk, signals_unwind

from proxy import _pick, start_targets

GOAL = 0.5
CONNECTIONS = 32


def run(duration: float, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tk-bench-token-") as tmp, signals_unwind():
        workdir = Path(tmp)
        processes = Processes(workdir)
        notes: list[str] = []
        try:
            targets = start_targets(processes, workdir, ["minimal", "tokenkeep"], notes)
            tk = targets["tokenkeep"]
            parts = urlsplit(tk.url)
            connection_id = parts.path.split("/")[2]
            token_url = f"{parts.scheme}://{parts.netloc}/connections/{connection_id}/token"
            answer = json.loads(fetch(token_url, tk.headers))
            if answer["access_token"] != ACCESS_TOKEN:
                raise RuntimeError("the token API did not answer the imported token")
            minimal = targets["minimal"]
            samples: dict[str, list[dict[str, float]]] = {"token_api": [], "minimal": []}
            for _ in range(rounds):  # interleaved: both see the same noise
                samples["token_api"].append(
                    run_wrk(
                        token_url,
                        CONNECTIONS,
                        duration,
                        headers=tk.headers,
                        cpu_pids=tk.cpu_pids,
                        other_pids=tk.other_pids,
                    )
                )
                samples["minimal"].append(
                    run_wrk(
                        minimal.url,
                        CONNECTIONS,
                        duration,
                        cpu_pids=minimal.cpu_pids,
                        other_pids=minimal.other_pids,
                    )
                )
            after = json.loads(fetch(token_url, tk.headers))
        finally:
            processes.stop_all()
    results: dict[str, Any] = {name: _pick(runs, "quietest") for name, runs in samples.items()}
    results["version_before"] = answer["version"]
    results["version_after"] = after["version"]
    results["served_cached"] = (
        after["access_token"] == ACCESS_TOKEN and after["version"] == answer["version"]
    )
    results["ratio"] = results["token_api"]["rps"] / max(1e-9, results["minimal"]["rps"])
    return results


def goals(results: dict[str, Any]) -> list[Goal]:
    return [
        Goal(
            "rps at c32, token API / minimal proxy",
            f"{results['ratio']:.2f}",
            f"≥ {GOAL}",
            results["ratio"] >= GOAL,
        ),
        Goal(
            "no refresh under load (stored version unchanged)",
            f"version {results['version_before']} → {results['version_after']}",
            "unchanged",
            bool(results["served_cached"]),
        ),
    ]


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        header(
            f"python bench/token_api.py --duration {args.duration:g} --rounds {args.rounds}",
            "wrk -t1 -c32; per setup the round with the least foreign load.",
        ),
        "",
        "| setup | rps | p50 | p99 | CPU µs/request | foreign load (cores) |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (
        ("token_api", "tokenkeep `GET /connections/{id}/token`"),
        ("minimal", "minimal proxy (uvicorn + aiohttp), 1.5 KB query"),
    ):
        r = results[name]
        lines.append(
            f"| {label} | {r['rps']:,.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | "
            f"{r['cpu_us']:.0f} | {r['foreign']:.2f} |"
        )
    lines += ["", f"Ratio token API / minimal proxy: {results['ratio']:.2f}.", ""]
    lines += render_goals(goals(results))
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    output_options(parser, "1 s, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds = 1.0, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_tools(install=args.install)
    results = run(args.duration, args.rounds)
    section = render(results, args)
    publish(args, "token_api", "Direct-mode token API (bench/token_api.py)", section, results)
    return 0 if results["served_cached"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
