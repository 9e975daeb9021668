"""Proxy benchmark: tokenkeep against nginx and a minimal Python proxy, on this machine.

Run::

    python bench/proxy.py [--duration 10] [--connections 1,32] [--rounds 1] [--install]

Installs ``nginx-light`` and ``wrk`` from Debian when missing (``--install``; root), then in
one run measures with ``wrk -t1 --latency`` at each connection count:

  (a) direct        wrk -> nginx serving a ~1.5 KB Salesforce query response for any path
  (b) nginx-proxy   wrk -> nginx keep-alive reverse proxy -> (a)        (the practical ceiling)
  (c) minimal       wrk -> uvicorn (uvloop, httptools) + bench/minimal_proxy.py (a raw ASGI
                    app + one aiohttp ClientSession, no auth, no checks) -> (a)   (the floor)
  (c2) minimal-granian   (c) under granian (Rust HTTP server, ASGI) instead of uvicorn
  (c3) minimal-rsgi      the same forwarding on granian's RSGI interface
  (c4) minimal-pyreqwest (c) with pyreqwest (Rust reqwest/hyper) instead of aiohttp
  (d) tokenkeep     wrk -> ``tokenkeep serve`` (1 worker, SQLite data dir, scheduler off,
                    log level WARNING) -> (a), as ``/c/<id>/services/data/v60.0/query?q=...``
                    with the API key as Bearer; the connection's instance_url is (a)
  (g) tokenkeep-granian  tokenkeep's ASGI app under the granian CLI
  (r) tokenkeep-pyreqwest  (d) with ``TOKENKEEP_UPSTREAM_CLIENT=pyreqwest``
  (e) tokenkeep-w2  the same with ``--workers 2``
  (u) tokenkeep-uvloop  diagnostic: (d) started with uvloop's event-loop policy installed
                    (``tokenkeep serve`` with 1 worker runs uvicorn inside ``asyncio.run``)
  (f) tokenkeep-gcfreeze  diagnostic: (d) with ``gc.freeze()`` right after the gateway's
                    start-up (patched in by the launcher, see harness.tokenkeep_cmd)
  (p) proxyapp      diagnostic: tokenkeep's ProxyApp alone under uvicorn, in-memory tokens

plus the CPU seconds per request of each proxy's processes (psutil, before/after), then
(unless ``--upload-mb 0``) a 100 MB Bulk API 2.0 CSV upload through tokenkeep to the
emulator with the gateway's idle and peak RSS (bench/upload.py). The results replace the
generated sections of docs/PERFORMANCE.md (``--doc``); the hand-written analysis around
them stays.

Issue 14's goals are computed against (c). ``--pin``: wrk and the upstream on core 0, the
proxy under test on core 1 (``taskset``), for ``--workers 2``.

Every server runs in its own process; all are torn down at the end, on error and on
Ctrl-C/SIGTERM. With ``--rounds N`` the setups are measured N times interleaved (all
servers stay up); per setup the round with the least foreign CPU (other processes, steal)
is reported (``--pick median`` for per-metric medians).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    ACCESS_TOKEN,
    LOAD_CPUS,
    QUERY,
    QUERY_PATH,
    REFRESH_TOKEN,
    Interrupted,
    Processes,
    ensure_tools,
    fetch,
    free_port,
    granian_cmd,
    load_average,
    machine,
    prepare_tokenkeep,
    query_body,
    run_wrk,
    serve_has_workers,
    signals_unwind,
    start_nginx,
    start_tokenkeep,
    start_upstream,
    uvicorn_cmd,
    wait_port,
)

ALL_SETUPS = (
    "direct",
    "nginx-proxy",
    "minimal",
    "minimal-granian",
    "minimal-rsgi",
    "minimal-pyreqwest",
    "tokenkeep",
    "tokenkeep-granian",
    "tokenkeep-pyreqwest",
    "tokenkeep-w2",
    "tokenkeep-uvloop",
    "tokenkeep-gcfreeze",
    "proxyapp",
)
LABELS = {
    "direct": "(a) direct to nginx upstream",
    "nginx-proxy": "(b) nginx keep-alive proxy",
    "minimal": "(c) minimal Python proxy",
    "minimal-granian": "(c2) (c) on granian ASGI",
    "minimal-rsgi": "(c3) (c) on granian RSGI",
    "minimal-pyreqwest": "(c4) (c) with pyreqwest, not aiohttp",
    "tokenkeep": "(d) tokenkeep serve, 1 worker",
    "tokenkeep-granian": "(g) tokenkeep's ASGI app on granian CLI",
    "tokenkeep-pyreqwest": "(r) (d) with the pyreqwest upstream client",
    "tokenkeep-w2": "(e) tokenkeep serve --workers 2",
    "tokenkeep-uvloop": "(u) (d) with uvloop's loop policy",
    "tokenkeep-gcfreeze": "(f) (d) with gc.freeze() after start",
    "proxyapp": "(p) ProxyApp alone, in-memory tokens",
}
GOALS = {"rps": 1.0, "nginx": 0.3, "latency": 1.0, "cpu": 1.0, "workers": 1.6}
DOC = Path(__file__).resolve().parent.parent / "docs" / "PERFORMANCE.md"
MARK_START = "<!-- bench/proxy.py:start (generated; edits inside are overwritten) -->"
MARK_END = "<!-- bench/proxy.py:end -->"


@dataclass
class Target:
    """One setup under load: where wrk sends requests and whose CPU is counted."""

    name: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    cpu_pids: list[int] = field(default_factory=list)
    other_pids: list[int] = field(default_factory=list)


@dataclass
class Run:
    """Everything one benchmark run produced."""

    machine: dict[str, str]
    date: str
    duration: float
    connections: list[int]
    rounds: int
    body_bytes: int
    pick: str = "quietest"
    pinned: bool = False
    results: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    upload: dict[str, float] | None = None


# --------------------------------------------------------------------------- servers
def start_targets(
    processes: Processes, workdir: Path, setups: Sequence[str], notes: list[str]
) -> dict[str, Target]:
    """Start the upstream and every requested proxy; check each answers the body unchanged."""
    upstream_port = start_upstream(processes, workdir)
    upstream = f"http://127.0.0.1:{upstream_port}"
    path = f"{QUERY_PATH}?{QUERY}"
    targets: dict[str, Target] = {}
    if "direct" in setups:
        targets["direct"] = Target("direct", upstream + path)
    if "nginx-proxy" in setups:
        port = start_nginx(
            processes, workdir, "reverse_proxy.conf", "nginx-proxy", upstream_port=upstream_port
        )
        proc = processes.started[-1][1]
        targets["nginx-proxy"] = Target(
            "nginx-proxy", f"http://127.0.0.1:{port}{path}", cpu_pids=[proc.pid]
        )
    if "minimal" in setups:
        port = free_port()
        proc = processes.start(
            "minimal", uvicorn_cmd("minimal_proxy:app", port), {"BENCH_UPSTREAM": upstream}
        )
        wait_port(port, proc)
        targets["minimal"] = Target(
            "minimal", f"http://127.0.0.1:{port}{path}", cpu_pids=[proc.pid]
        )
    if "minimal-pyreqwest" in setups and _installed("pyreqwest", "minimal-pyreqwest", notes):
        port = free_port()
        cmd = uvicorn_cmd("minimal_proxy_pyreqwest:app", port)
        proc = processes.start("minimal-pyreqwest", cmd, {"BENCH_UPSTREAM": upstream})
        wait_port(port, proc)
        url = f"http://127.0.0.1:{port}{path}"
        targets["minimal-pyreqwest"] = Target("minimal-pyreqwest", url, cpu_pids=[proc.pid])
    for name, app, interface in (
        ("minimal-granian", "minimal_proxy:app", "asgi"),
        ("minimal-rsgi", "minimal_proxy_rsgi:app", "rsgi"),
    ):
        if name in setups and _installed("granian", name, notes):
            port = free_port()
            cmd = granian_cmd(app, port, interface=interface)
            proc = processes.start(name, cmd, {"BENCH_UPSTREAM": upstream})
            wait_port(port, proc)
            targets[name] = Target(name, f"http://127.0.0.1:{port}{path}", cpu_pids=[proc.pid])
    wants_tokenkeep = [s for s in setups if s.startswith("tokenkeep")]
    if wants_tokenkeep:
        data = prepare_tokenkeep(
            workdir / "tokenkeep",
            instance_url=upstream,
            login_url=upstream,
            access_token=ACCESS_TOKEN,
            refresh_token=REFRESH_TOKEN,
        )
        auth = {"Authorization": f"Bearer {data.api_key}"}
        for name in wants_tokenkeep:
            if name == "tokenkeep-granian":
                if not _installed("granian", name, notes):
                    continue
                port = free_port()
                cmd = granian_cmd("tokenkeep.server:create_asgi_app", port, factory=True)
                proc = processes.start(name, cmd, data.env)
                wait_port(port, proc, timeout=60)
                url = f"http://127.0.0.1:{port}/c/{data.connection_id}{path}"
                targets[name] = Target(name, url, auth, [proc.pid])
                continue
            workers = 2 if name == "tokenkeep-w2" else 1
            if workers > 1 and not serve_has_workers():
                notes.append("`tokenkeep serve --workers` does not exist: (e) not measured.")
                continue
            port, proc = start_tokenkeep(
                processes,
                data,
                name,
                workers=workers,
                uvloop_policy=name == "tokenkeep-uvloop",
                gc_freeze=name == "tokenkeep-gcfreeze",
                env={"TOKENKEEP_UPSTREAM_CLIENT": "pyreqwest"}
                if name == "tokenkeep-pyreqwest"
                else None,
            )
            url = f"http://127.0.0.1:{port}/c/{data.connection_id}{path}"
            targets[name] = Target(name, url, auth, [proc.pid])
    if "proxyapp" in setups:
        port = free_port()
        key = "tk_bench_proxyapp_key"
        proc = processes.start(
            "proxyapp",
            uvicorn_cmd("proxyapp_only:create_app", port, factory=True),
            {"BENCH_UPSTREAM": upstream, "BENCH_API_KEY": key},
        )
        wait_port(port, proc)
        targets["proxyapp"] = Target(
            "proxyapp",
            f"http://127.0.0.1:{port}/c/bench{path}",
            {"Authorization": f"Bearer {key}"},
            [proc.pid],
        )
    upstream_pid = processes.started[0][1].pid
    for target in targets.values():
        target.other_pids = [upstream_pid]
    expected = query_body()
    for target in targets.values():
        # The body must come through byte for byte, else the numbers measure an error page.
        for _ in range(3):  # with 2 workers, give each a chance to answer once
            got = fetch(target.url, target.headers)
            if got != expected:
                raise RuntimeError(f"{target.name}: unexpected body {got[:200]!r}")
    return targets


def _installed(module: str, setup: str, notes: list[str]) -> bool:
    """True when ``module`` can be imported here; else a note says the setup was skipped."""
    if importlib.util.find_spec(module) is not None:
        return True
    notes.append(f"`{module}` is not installed (`pip install {module}`): {setup} not measured.")
    return False


# --------------------------------------------------------------------------- measuring
def measure(
    targets: dict[str, Target],
    connections: Sequence[int],
    duration: float,
    rounds: int,
    *,
    pick: str = "quietest",
    cpus: str | None = None,
) -> dict[str, dict[int, dict[str, float]]]:
    """wrk every target at every connection count, ``rounds`` times interleaved; one result
    per target and count (see :func:`_pick`)."""
    samples: dict[str, dict[int, list[dict[str, float]]]] = {
        name: {c: [] for c in connections} for name in targets
    }
    for round_no in range(rounds):
        for name, target in targets.items():
            for c in connections:
                result = run_wrk(
                    target.url,
                    c,
                    duration,
                    headers=target.headers,
                    cpu_pids=target.cpu_pids,
                    other_pids=target.other_pids,
                    cpus=cpus,
                )
                samples[name][c].append(result)
                print(
                    f"round {round_no + 1}/{rounds} {name:>13} c{c:<3} "
                    f"{result['rps']:8.0f} rps  p50 {result['p50']:7.3f} ms  "
                    f"p99 {result['p99']:7.3f} ms  cpu {result['cpu_us']:6.0f} µs/req  "
                    f"load {result['load']:.1f}  foreign {result['foreign']:.2f} cores",
                    flush=True,
                )
    return {
        name: {c: _pick(runs, pick) for c, runs in per_c.items()} for name, per_c in samples.items()
    }


def _pick(runs: list[dict[str, float]], how: str) -> dict[str, float]:
    """``quietest``: the whole sample with the least foreign CPU; ``median``: per metric."""
    if how == "median":
        return {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return min(runs, key=lambda r: r["foreign"])


# --------------------------------------------------------------------------- the report
def goals(run: Run) -> list[tuple[str, float, str, bool]]:
    """(what, measured ratio, goal text, met) for each of issue 14's goals we can compute;
    the baseline is always the old minimal proxy (c), uvicorn + aiohttp."""
    res, low, high = run.results, min(run.connections), max(run.connections)
    out: list[tuple[str, float, str, bool]] = []
    tk, mini, direct = res.get("tokenkeep"), res.get("minimal"), res.get("direct")
    ngx = res.get("nginx-proxy")
    if tk and mini:
        ratio = tk[high]["rps"] / mini[high]["rps"]
        out.append((f"rps at c{high}, tokenkeep / minimal", ratio, "≥ 1.0", ratio >= GOALS["rps"]))
        if ngx:
            ratio = tk[high]["rps"] / ngx[high]["rps"]
            out.append(
                (
                    f"rps at c{high}, tokenkeep / nginx-proxy",
                    ratio,
                    "≥ 0.3",
                    ratio >= GOALS["nginx"],
                )
            )
        if direct:
            added_tk = tk[low]["p50"] - direct[low]["p50"]
            added_min = mini[low]["p50"] - direct[low]["p50"]
            ratio = added_tk / added_min if added_min > 0 else float("nan")
            out.append(
                (
                    f"added p50 at c{low} over direct, tokenkeep / minimal",
                    ratio,
                    "≤ 1.0",
                    ratio <= GOALS["latency"],
                )
            )
        ratio = tk[high]["cpu_us"] / mini[high]["cpu_us"]
        out.append(
            (
                f"CPU per request at c{high}, tokenkeep / minimal",
                ratio,
                "≤ 1.0",
                ratio <= GOALS["cpu"],
            )
        )
    if tk and res.get("tokenkeep-w2"):
        ratio = res["tokenkeep-w2"][high]["rps"] / tk[high]["rps"]
        out.append(
            (f"rps at c{high}, workers 2 / workers 1", ratio, "≥ 1.6", ratio >= GOALS["workers"])
        )
    return out


def _fmt(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def render(run: Run) -> str:
    """The generated Markdown section of docs/PERFORMANCE.md."""
    res, low, high = run.results, min(run.connections), max(run.connections)
    m = run.machine
    lines = [
        f"Measured {run.date} by `python bench/proxy.py --duration {run.duration:g} "
        f"--connections {','.join(map(str, run.connections))} --rounds {run.rounds}"
        f"{' --pin' if run.pinned else ''}`.",
        "",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['memory']}, Linux {m['kernel']}; "
        f"{m['versions']}. wrk `-t1 --latency`; upstream: nginx serving {run.body_bytes} B "
        "of JSON for any path. "
        + (
            f"Pinned (`--pin`): wrk and the upstream on core {LOAD_CPUS}, the proxy under test "
            "(all its workers) on core 1. "
            if run.pinned
            else f"wrk, the upstream and the proxy under test share these {m['cores']} cores "
            "(as for the issue's reference figures). "
        )
        + f"Each setup ran "
        f"{run.rounds} interleaved round(s) of {run.duration:g} s after a 1 s warm-up; "
        + (
            "the table shows, per setup and connection count, the round least disturbed by "
            "other work on the machine (`foreign`)."
            if run.pick == "quietest"
            else "the table shows per-metric medians."
        ),
        "",
    ]
    direct = res.get("direct")
    ngx, mini = res.get("nginx-proxy"), res.get("minimal")
    head = (
        f"| setup | rps c{low} | p50 c{low} ms | p99 c{low} ms | added p50 c{low} µs "
        f"| rps c{high} | p50 c{high} ms | p99 c{high} ms | CPU µs/req c{high} "
        f"| rps c{high} / nginx-proxy | rps c{high} / minimal | foreign c{low}/c{high} |"
    )
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name in ALL_SETUPS:
        if name not in res:
            continue
        lo, hi = res[name][low], res[name][high]
        added = (lo["p50"] - direct[low]["p50"]) * 1000 if direct else float("nan")
        lines.append(
            "| "
            + " | ".join(
                [
                    LABELS[name],
                    _fmt(lo["rps"]),
                    _fmt(lo["p50"], 3),
                    _fmt(lo["p99"], 3),
                    _fmt(added) if name != "direct" else "0",
                    _fmt(hi["rps"]),
                    _fmt(hi["p50"], 2),
                    _fmt(hi["p99"], 2),
                    _fmt(hi["cpu_us"]),
                    _fmt(hi["rps"] / ngx[high]["rps"], 2) if ngx else "-",
                    _fmt(hi["rps"] / mini[high]["rps"], 2) if mini else "-",
                    f"{_fmt(lo['foreign'], 2)}/{_fmt(hi['foreign'], 2)}",
                ]
            )
            + " |"
        )
    lines += [
        "",
        "`added p50` is the setup's p50 minus direct's at the same connection count; `CPU "
        "µs/req` is user+system CPU of the proxy's processes (all workers) over the measured "
        "requests; `foreign` is how many cores other processes (and the hypervisor's steal) "
        "used during the run, from /proc/stat minus the benchmark's own processes: near 0 is a "
        "clean sample, 1 means half this 2-core machine was busy elsewhere.",
        "",
        "Goals (issue 14 §1; baseline: the old minimal proxy (c), uvicorn + aiohttp):",
        "",
        "| goal | measured | target | |",
        "|---|---|---|---|",
    ]
    for what, ratio, target, met in goals(run):
        lines.append(f"| {what} | {_fmt(ratio, 2)}x | {target} | {'met' if met else 'MISSED'} |")
    for note in run.notes:
        lines += ["", note]
    if run.upload:
        up = run.upload
        lines += [
            "",
            f"Memory: a {up['size_mb']:.0f} MB Bulk API 2.0 CSV upload (`PUT .../jobs/ingest/"
            "<id>/batches`, streamed by the client) through tokenkeep (1 worker) to the emulator "
            f"in its own process: gateway RSS {up['rss_idle_mb']:.0f} MB idle before, "
            f"{up['rss_peak_mb']:.0f} MB peak during the upload "
            f"(+{up['rss_peak_mb'] - up['rss_idle_mb']:.0f} MB), "
            f"{up['mb_per_s']:.0f} MB/s end to end; the emulator counted "
            f"{up['rows']:,.0f} rows of the {up['rows_sent']:,.0f} sent.",
        ]
    return "\n".join(lines)


def write_doc(path: Path, section: str) -> None:
    """Replace the generated section of ``path`` (create the file around it if needed)."""
    block = f"{MARK_START}\n{section}\n{MARK_END}"
    if path.exists():
        text = path.read_text()
        if MARK_START in text and MARK_END in text:
            before, rest = text.split(MARK_START, 1)
            after = rest.split(MARK_END, 1)[1]
            path.write_text(before + block + after)
            return
        path.write_text(text.rstrip() + "\n\n## Latest run\n\n" + block + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Performance\n\nWhat the proxy costs, measured by `bench/proxy.py` (see bench/README.md)."
        "\n\n## Latest run\n\n" + block + "\n"
    )


# --------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", default="1,32", help="comma-separated, e.g. 1,32")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repetitions")
    parser.add_argument(
        "--pick",
        choices=("quietest", "median"),
        default="quietest",
        help="per setup: the round with the least foreign CPU, or per-metric medians",
    )
    parser.add_argument("--install", action="store_true", help="apt-get install nginx/wrk")
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"wrk and the upstream on core {LOAD_CPUS}, each proxy on core 1 (taskset)",
    )
    parser.add_argument(
        "--setups", default=",".join(ALL_SETUPS), help=f"subset of {','.join(ALL_SETUPS)}"
    )
    parser.add_argument("--upload-mb", type=int, default=100, help="0 skips the upload")
    parser.add_argument("--doc", type=Path, default=DOC, help="file to update ('-': none)")
    parser.add_argument("--json", type=Path, default=None, help="also write raw numbers here")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    args.connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(args.setups) - set(ALL_SETUPS)
    if unknown or not args.connections or args.rounds < 1 or args.duration < 1:
        parser.error(f"bad options (unknown setups: {sorted(unknown)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print and write the report."""
    from tokenkeep.clock import SystemClock

    args = parse_args(argv)
    ensure_tools(install=args.install)
    workdir = Path(tempfile.mkdtemp(prefix="tk-bench-"))
    processes = Processes(workdir, server_cpus="1" if args.pin else None)
    run = Run(
        machine=machine(),
        date=SystemClock().now().strftime("%Y-%m-%d %H:%M UTC"),
        duration=args.duration,
        connections=args.connections,
        rounds=args.rounds,
        body_bytes=len(query_body()),
        pick=args.pick,
        pinned=args.pin,
    )
    print(f"work dir {workdir}; load average {load_average():.1f}", flush=True)
    try:
        with signals_unwind():
            try:
                targets = start_targets(processes, workdir, args.setups, run.notes)
                run.results = measure(
                    targets,
                    args.connections,
                    args.duration,
                    args.rounds,
                    pick=args.pick,
                    cpus=LOAD_CPUS if args.pin else None,
                )
            finally:
                processes.stop_all()
            if args.upload_mb > 0:
                from upload import measure_upload

                run.upload = measure_upload(processes, workdir / "upload", args.upload_mb)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"interrupted ({type(exc).__name__}): everything stopped", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    section = render(run)
    print("\n" + section)
    if str(args.doc) != "-":
        write_doc(args.doc, section)
        print(f"\nwrote {args.doc}")
    if args.json:
        args.json.write_text(json.dumps(run.__dict__, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
