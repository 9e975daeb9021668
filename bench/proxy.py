"""Proxy benchmark: tokenkeep's proxy against nginx and a minimal Python proxy.

Run:  python bench/proxy.py [--seconds 8] [--write docs/PERFORMANCE.md]

Installs ``nginx-light`` and ``wrk`` from Debian when they are missing (needs root), then
measures, on this machine, one after the other:

  (a) direct: wrk -> nginx serving a ~1.5 KB Salesforce-like JSON body
  (b) nginx-proxy: wrk -> nginx keep-alive reverse proxy -> (a)   (the practical ceiling)
  (c) minimal: wrk -> uvicorn (uvloop, httptools) + a 25-line raw ASGI app + one aiohttp
      ClientSession -> (a)   (the floor of what a Python proxy costs)
  (d) tokenkeep: wrk -> uvicorn + tokenkeep's ProxyApp -> (a), 1 worker, then 2 workers

tokenkeep runs its real proxy code path (path validation, API-key check with its cache,
header hygiene, write-pause admission, retry policy, limit tracking, one JSON log line per
call to /dev/null) with an in-memory TokenSource: the refresh coordinator's cache hit is
what the real gateway does on the hot path too.

This module is also the uvicorn app factory for (c) and (d): ``minimal_app`` and
``tokenkeep_app`` (upstream URL from ``BENCH_UPSTREAM``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PATH = "/services/data/v60.0/query"
QUERY = "q=SELECT+Id,Name+FROM+Account"
API_KEY = "tk_bench_key_0123456789abcdef"
SINK_PORT = 0  # the upload sink's port, chosen in run()


# --------------------------------------------------------------------------- app factories
def minimal_app() -> Any:
    """(c): the smallest honest Python proxy (no auth, no checks)."""
    import aiohttp

    upstream = os.environ["BENCH_UPSTREAM"]
    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        session = state.get("s")
        if session is None:
            session = state["s"] = aiohttp.ClientSession(auto_decompress=False)
        url = (
            upstream
            + scope["path"]
            + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
        )
        async with session.get(url) as resp:
            headers = [
                (k, v)
                for k, v in resp.raw_headers
                if k.lower() not in (b"connection", b"transfer-encoding")
            ]
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            async for chunk in resp.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def tokenkeep_app() -> Any:
    """(d): tokenkeep's ProxyApp with an in-memory TokenSource."""
    from tokenkeep.clock import SystemClock
    from tokenkeep.config import load_settings
    from tokenkeep.observability.logging import configure_logging
    from tokenkeep.proxy import ProxyApp, ProxyToken
    from tokenkeep.secret import Secret

    configure_logging("json", "INFO", stream=open(os.devnull, "w"))  # noqa: SIM115
    upstream = os.environ["BENCH_UPSTREAM"]
    token = ProxyToken(
        "bench", "00Dbench000001AAA", upstream, Secret("00Dbench!AQ4AQbenchtoken"), 1
    )
    sink = ProxyToken(
        "sink", "00Dbench000002AAA", os.environ.get("BENCH_SINK", upstream), token.access_token, 1
    )

    class Tokens:
        async def token_for(self, connection_id: str) -> ProxyToken:
            return sink if connection_id == "sink" else token

        async def refresh_after_rejection(
            self, connection_id: str, rejected_version: int
        ) -> ProxyToken:
            return token

        async def report_cause(
            self, connection_id: str, cause: str, evidence: dict[str, Any]
        ) -> None:
            return None

    async def authenticate(key: str) -> bool:
        return key == API_KEY

    settings = load_settings(data_dir=Path(tempfile.gettempdir()) / "tokenkeep-bench")
    return ProxyApp(Tokens(), authenticate, settings, SystemClock())


# --------------------------------------------------------------------------- the harness
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _ensure_tools() -> None:
    missing = [
        p
        for p, tool in (("wrk", "wrk"), ("nginx-light", "nginx"))
        if shutil.which(tool) is None and not Path("/usr/sbin/" + tool).exists()
    ]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def _body() -> bytes:
    records = [
        {
            "attributes": {
                "type": "Account",
                "url": f"/services/data/v60.0/sobjects/Account/001xx00000{i:05d}AAA",
            },
            "Id": f"001xx00000{i:05d}AAA",
            "Name": f"Account number {i}",
        }
        for i in range(9)
    ]
    return json.dumps({"totalSize": 9, "done": True, "records": records}).encode()


@contextlib.contextmanager
def _nginx(workdir: Path, direct_port: int, proxy_port: int) -> Iterator[None]:
    docroot = workdir / "www" / PATH.lstrip("/")
    docroot.parent.mkdir(parents=True, exist_ok=True)
    docroot.write_bytes(_body())
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; pid {workdir}/nginx.pid; error_log {workdir}/error.log;
user root;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {workdir}/cb; proxy_temp_path {workdir}/pt;
  fastcgi_temp_path {workdir}/ft; uwsgi_temp_path {workdir}/ut; scgi_temp_path {workdir}/st;
  keepalive_requests 1000000;
  upstream direct {{ server 127.0.0.1:{direct_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{direct_port}; root {workdir}/www;
           location / {{ default_type application/json;
                        add_header Sforce-Limit-Info "api-usage=18/15000"; }} }}
  server {{ listen 127.0.0.1:{proxy_port};
           location / {{ proxy_pass http://direct; proxy_http_version 1.1;
                        proxy_set_header Connection ""; }} }}
}}
""")
    proc = subprocess.Popen(
        ["nginx", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(direct_port)
        _wait_port(proxy_port)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def _uvicorn(
    factory: str, port: int, upstream: str, workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(__file__).parent),
        f"proxy:{factory}",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--no-server-header",
        "--no-date-header",
        "--workers",
        str(workers),
    ]
    env = {**os.environ, "BENCH_UPSTREAM": upstream, "BENCH_SINK": f"http://127.0.0.1:{SINK_PORT}"}
    proc = subprocess.Popen(cmd, env=env)
    try:
        _wait_port(port)
        time.sleep(1.0 if workers > 1 else 0.3)
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)


def _cpu_seconds(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _wrk(
    url: str, connections: int, seconds: int, headers: dict[str, str], pid: int | None
) -> dict[str, float]:
    def wrk_args(duration: int) -> list[str]:
        args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
        for key, value in headers.items():
            args += ["-H", f"{key}: {value}"]
        return [*args, url]

    subprocess.run(wrk_args(1), capture_output=True, check=True)  # warm-up (pools, caches)
    cpu_before = _cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(wrk_args(seconds), capture_output=True, text=True, check=True).stdout
    cpu_after = _cpu_seconds(pid) if pid else 0.0
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # Anchored: "93.50%" in the Thread Stats table must not be read as the 50th percentile.
    p50 = _to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} failed responses")
    cpu_us = (cpu_after - cpu_before) / requests * 1e6 if pid and requests else float("nan")
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu_us}


def _upload_rss(url: str, pid: int, size: int) -> dict[str, float]:
    """Stream ``size`` bytes through the proxy to a counting sink; sample the worker's RSS."""
    import aiohttp
    import psutil
    from aiohttp import web

    received = 0

    async def sink(request: web.Request) -> web.Response:
        nonlocal received
        async for chunk in request.content.iter_any():
            received += len(chunk)
        return web.Response(status=201, text='{"ok":true}')

    worker = psutil.Process(pid)
    workers = worker.children(recursive=True) or [worker]

    def rss() -> float:
        return sum(p.memory_info().rss for p in workers) / 1e6

    async def go() -> dict[str, float]:
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", sink)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", SINK_PORT).start()
        before, peak = rss(), 0.0

        async def body() -> Any:
            nonlocal peak
            block = b"Id,Name\n" + b"x" * (1024 * 1024 - 8)
            for i in range(size // len(block)):
                if i % 8 == 0:
                    peak = max(peak, rss())
                yield block

        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                url,
                data=body(),
                headers={
                    "Authorization": f"Bearer {API_KEY}",
                    "Content-Type": "text/csv",
                    "Content-Length": str(size // (1024 * 1024) * 1024 * 1024),
                },
            ) as resp,
        ):
            await resp.read()
            if resp.status != 201:
                raise RuntimeError(f"upload answered {resp.status}")
        seconds = time.monotonic() - started
        await runner.cleanup()
        if received != size:
            raise RuntimeError(f"the sink received {received} of {size} bytes")
        return {
            "rss_before_mb": before,
            "rss_peak_mb": max(peak, rss()),
            "mb_per_s": size / 1e6 / seconds,
        }

    import asyncio

    return asyncio.run(go())


def run(seconds: int) -> dict[str, dict[str, dict[str, float]]]:
    _ensure_tools()
    results: dict[str, dict[str, dict[str, float]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="tk-bench-"))
    global SINK_PORT
    direct_port, nginx_port, minimal_port, tk_port, tk2_port = (_free_port() for _ in range(5))
    SINK_PORT = _free_port()
    upstream = f"http://127.0.0.1:{direct_port}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with _nginx(workdir, direct_port, nginx_port):
        for name, url, headers, pid in (
            ("direct", f"{upstream}{PATH}?{QUERY}", {}, None),
            ("nginx-proxy", f"http://127.0.0.1:{nginx_port}{PATH}?{QUERY}", {}, None),
        ):
            results[name] = {f"c{c}": _wrk(url, c, seconds, headers, pid) for c in (1, 32)}
        with _uvicorn("minimal_app", minimal_port, upstream) as proc:
            url = f"http://127.0.0.1:{minimal_port}{PATH}?{QUERY}"
            results["minimal"] = {f"c{c}": _wrk(url, c, seconds, {}, proc.pid) for c in (1, 32)}
        with _uvicorn("tokenkeep_app", tk_port, upstream) as proc:
            url = f"http://127.0.0.1:{tk_port}/c/bench{PATH}?{QUERY}"
            results["tokenkeep"] = {f"c{c}": _wrk(url, c, seconds, auth, proc.pid) for c in (1, 32)}
            upload = (
                f"http://127.0.0.1:{tk_port}/c/sink/services/data/v60.0/jobs/ingest/750/batches"
            )
            results["upload"] = {"100MB": _upload_rss(upload, proc.pid, 100 * 1024 * 1024)}
        with _uvicorn("tokenkeep_app", tk2_port, upstream, workers=2) as proc:
            url = f"http://127.0.0.1:{tk2_port}/c/bench{PATH}?{QUERY}"
            results["tokenkeep-2w"] = {"c32": _wrk(url, 32, seconds, auth, proc.pid)}
    shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(results: dict[str, dict[str, dict[str, float]]]) -> str:
    direct1 = results["direct"]["c1"]["p50"]
    ngx, mini = results["nginx-proxy"], results["minimal"]
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}); wrk -t1; upstream: nginx serving {len(_body())} B of JSON.",
        "",
        "| setup | rps c32 | p50 c32 ms | p99 c32 ms | p50 c1 ms | added p50 c1 µs "
        "| CPU µs/req | rps / nginx-proxy | rps / minimal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        if name == "upload":
            continue
        c32, c1 = runs["c32"], runs.get("c1")
        added = f"{(c1['p50'] - direct1) * 1000:.0f}" if c1 else "-"
        lines.append(
            f"| {name} | {c32['rps']:.0f} | {c32['p50']:.2f} | {c32['p99']:.2f} | "
            f"{c1['p50'] if c1 else float('nan'):.3f} | {added} | "
            f"{c32['cpu_us']:.0f} | {c32['rps'] / ngx['c32']['rps']:.2f} | "
            f"{c32['rps'] / mini['c32']['rps']:.2f} |"
        )
    tk = results["tokenkeep"]
    added_tk = tk["c1"]["p50"] - direct1
    added_min = mini["c1"]["p50"] - direct1
    latency_ratio = added_tk / added_min if added_min > 0 else float("nan")
    two_workers = results["tokenkeep-2w"]["c32"]["rps"] / tk["c32"]["rps"]
    lines += [
        "",
        "Goals (issue 6):",
        f"- rps at c32 >= 0.7x minimal: {tk['c32']['rps'] / mini['c32']['rps']:.2f}x",
        f"- added p50 at c1 <= 1.5x minimal's: {latency_ratio:.2f}x",
        f"- CPU per request <= 1.5x minimal's: {tk['c32']['cpu_us'] / mini['c32']['cpu_us']:.2f}x",
        f"- 2 workers >= 1.6x 1 worker: {two_workers:.2f}x",
        "",
        "100 MB upload through tokenkeep (1 worker), worker RSS: "
        f"{results['upload']['100MB']['rss_before_mb']:.0f} MB before, "
        f"{results['upload']['100MB']['rss_peak_mb']:.0f} MB peak, "
        f"{results['upload']['100MB']['mb_per_s']:.0f} MB/s.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--write", type=Path, default=None, help="append the table to this file")
    parser.add_argument("--json", action="store_true", help="print raw numbers as JSON too")
    args = parser.parse_args()
    results = run(args.seconds)
    table = report(results)
    print(table)
    if args.json:
        print(json.dumps(results, indent=2))
    if args.write:
        with args.write.open("a") as fh:
            fh.write("\n## Proxy benchmark (bench/proxy.py)\n\n" + table + "\n")


if __name__ == "__main__":
    main()
