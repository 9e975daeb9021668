"""Where a proxy's CPU goes under load: py-spy samples while wrk drives it.

Run::

    pip install py-spy
    python bench/pyspy_profile.py [--setup tokenkeep] [--connections 32] [--duration 10] \
        [--out bench/profiles] [--svg]

Starts the upstream and the chosen setup exactly as bench/proxy.py does, records it with
``py-spy record --format raw`` (collapsed stacks, one per line; any flame-graph tool reads
them) during a wrk run, and prints two tables: the functions where samples landed (self)
and the functions on the stack (inclusive), each as a share of the samples. py-spy samples
only threads that are running (not the event loop waiting in epoll), so the shares are of
the CPU the proxy used. With ``--svg`` a second run writes a flame graph as well.

For ``tokenkeep-w2`` the first worker is sampled.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import Interrupted, Processes, ensure_tools, run_wrk, signals_unwind

from proxy import ALL_SETUPS, Target, start_targets

_FRAME = re.compile(r"(.*) \((.*?):(\d+)\)$")


def short_frame(frame: str) -> str:
    """``fn (path:line)`` as ``fn (package/module.py)``: site-packages and src/ stripped."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    function, path, _line = match.groups()
    path = re.sub(r".*site-packages/", "", path)
    path = re.sub(r".*/src/", "", path)
    path = re.sub(r".*/lib/python3\.\d+/", "stdlib/", path)
    return f"{function} ({path})"


def summarize(raw: str, top: int = 25) -> str:
    """Self and inclusive shares per function from py-spy's raw (collapsed) output."""
    self_count: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    layer: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [short_frame(f) for f in stack.split(";")]
        self_count[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        layer[_layer(frames[-1])] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self (where the CPU was):"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_count.most_common(top)]
    out += ["", "self, by layer:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in layer.most_common()]
    out += ["", "inclusive (on the stack):"]
    out += [
        f"  {100 * c / total:5.1f}%  {f}"
        for f, c in inclusive.most_common(top + 15)
        if c < total * 0.97  # drop the always-present runner frames
    ][: top + 5]
    return "\n".join(out)


def _layer(frame: str) -> str:
    for prefix, name in (
        ("(tokenkeep/proxy", "tokenkeep proxy"),
        ("(tokenkeep/lifecycle", "tokenkeep lifecycle"),
        ("(tokenkeep/", "tokenkeep other"),
        ("(aiohttp/", "aiohttp (client)"),
        ("(uvicorn/", "uvicorn (server)"),
        ("(structlog/", "structlog"),
        ("(yarl/", "yarl"),
        ("(multidict/", "multidict"),
        ("(stdlib/asyncio", "asyncio"),
        ("(asyncio/", "asyncio"),
        ("(selectors.py", "asyncio"),
        ("(stdlib/", "stdlib other"),
        ("(starlette/", "starlette"),
    ):
        if prefix in frame:
            return name
    return "other"


def record(
    target: Target, connections: int, duration: float, output: Path, fmt: str
) -> dict[str, float]:
    """py-spy on the target's (first) process while wrk drives it."""
    pid = target.cpu_pids[0]
    import psutil

    children = psutil.Process(pid).children(recursive=True)
    if children:  # uvicorn --workers: sample a worker, not the idle supervisor
        pid = children[-1].pid
    spy = subprocess.Popen(
        [
            "py-spy", "record", "--pid", str(pid), "--duration", str(int(duration) + 1),
            "--rate", "250", "--nonblocking", "--format", fmt, "-o", str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        result = run_wrk(
            target.url,
            connections,
            duration,
            headers=target.headers,
            cpu_pids=target.cpu_pids,
            warmup=0,
        )
        spy.wait(duration + 30)
    finally:
        if spy.poll() is None:
            spy.terminate()
            spy.wait(10)
    return result


def main() -> int:
    """Profile one setup; print the summary; keep the raw stacks (and SVG) in --out."""
    parser = argparse.ArgumentParser(description="py-spy profile of a proxy under wrk load.")
    parser.add_argument(
        "--setup", default="tokenkeep", choices=[s for s in ALL_SETUPS if s != "direct"]
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("bench/profiles"))
    parser.add_argument("--svg", action="store_true", help="also record a flame graph")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is missing: pip install py-spy")
    ensure_tools(install=False)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="tk-profile-"))
    processes = Processes(workdir)
    try:
        with signals_unwind():
            notes: list[str] = []
            target = start_targets(processes, workdir, [args.setup], notes)[args.setup]
            run_wrk(target.url, args.connections, 1, headers=target.headers, warmup=0)
            raw = args.out / f"{args.setup}-c{args.connections}.txt"
            result = record(target, args.connections, args.duration, raw, "raw")
            print(
                f"{args.setup} c{args.connections}: {result['rps']:.0f} rps, "
                f"p50 {result['p50']:.3f} ms, {result['cpu_us']:.0f} CPU µs/req "
                f"(under py-spy, which costs a little)\n"
            )
            print(summarize(raw.read_text(), args.top))
            print(f"\nraw stacks: {raw}")
            if args.svg:
                svg = args.out / f"{args.setup}-c{args.connections}.svg"
                record(target, args.connections, args.duration, svg, "flamegraph")
                print(f"flame graph: {svg}")
    except (KeyboardInterrupt, Interrupted):
        return 130
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
