"""Shared plumbing of the benchmarks: tools, processes, ports, nginx, tokenkeep, wrk.

Every server runs in its own process group (``start_new_session``) so that tearing down
kills exactly what the benchmark started, children included (nginx workers, uvicorn
workers), and a Ctrl-C in the terminal reaches only the benchmark itself, whose ``finally``
then stops everything in order. SIGTERM and SIGHUP are turned into the same clean exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
NGINX_TEMPLATES = BENCH_DIR / "nginx"
QUERY_PATH = "/services/data/v60.0/query"
#: With ``--pin``: wrk and the upstream run on this core, the server under test elsewhere.
LOAD_CPUS = "0"
QUERY = "q=SELECT+Id,Name+FROM+Account+LIMIT+9"
ORG_ID = "00Dbx0000000001AAA"
USER_ID = "005bx0000000001AAA"
ACCESS_TOKEN = "00Dbx0000000001!AQ4AQbench.access.token.for.the.nginx.upstream"
REFRESH_TOKEN = "5Aep861bench.refresh.token"


# --------------------------------------------------------------------------- tools
def find_tool(name: str) -> str | None:
    """The path of ``name`` on PATH or in /usr/sbin (nginx lives there, off a user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path("/usr/sbin") / name
    return str(candidate) if candidate.exists() else None


def missing_packages() -> list[str]:
    """Debian packages to install for the tools that are not there yet."""
    wanted = {"wrk": "wrk", "nginx": "nginx-light"}
    return [package for tool, package in wanted.items() if find_tool(tool) is None]


def ensure_tools(*, install: bool) -> None:
    """Install nginx and wrk from Debian when missing (root, apt reachable), else explain."""
    missing = missing_packages()
    if not missing:
        return
    if not install:
        raise SystemExit(
            f"missing tools ({', '.join(missing)}): run with --install (root, Debian mirror) "
            f"or `apt-get install -y {' '.join(missing)}`"
        )
    if os.geteuid() != 0:
        raise SystemExit(f"--install needs root to apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)
    except subprocess.CalledProcessError:
        # Some mirrors only carry the full package.
        fallback = ["nginx" if p == "nginx-light" else p for p in missing]
        subprocess.run(["apt-get", "install", "-y", "-q", *fallback], check=True, env=env)


# --------------------------------------------------------------------------- machine
def machine() -> dict[str, str]:
    """Cores, CPU model, memory, kernel and versions, for the report."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        memory = f"{int(first.split()[1]) / 1024 / 1024:.1f} GiB RAM"
    versions = {"python": platform.python_version()}
    for module in ("uvicorn", "uvloop", "httptools", "aiohttp"):
        with contextlib.suppress(Exception):
            versions[module] = __import__(module).__version__
    nginx = find_tool("nginx")
    if nginx:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
            versions["nginx"] = out.stderr.strip().rsplit("/", 1)[-1]
    return {
        "cores": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "kernel": platform.release(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, steal)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, steal = (int(fields[i]) for i in (0, 1, 2, 7))
        return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def _children_cpu() -> float:
    # wrk is the only child the benchmark waits for during a measured run.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    """The 1-minute load average (other work on the machine skews the figures)."""
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- ports
def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0
) -> None:
    """Until something accepts on ``port``; fail early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def fetch(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> bytes:
    """GET ``url``; the body of a 200 answer, else a RuntimeError naming the status."""
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"GET {url} answered {exc.code}: {exc.read()[:300]!r}") from None


# --------------------------------------------------------------------------- processes
class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: unwind and tear down like Ctrl-C."""


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into an exception for the duration (so ``finally`` runs)."""
    previous = {
        sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class Processes:
    """The servers a benchmark started; :meth:`stop_all` ends them (and only them)."""

    logdir: Path
    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    #: ``--pin``: the CPU list (``taskset -c``) of the servers under test; the upstream and
    #: wrk get :data:`LOAD_CPUS`. ``None``: no pinning (everything shares every core).
    server_cpus: str | None = None

    def start(
        self, name: str, cmd: list[str], env: Mapping[str, str] | None = None, *, load: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in its own session; output goes to ``<logdir>/<name>.log``.

        ``load``: part of the load side (the upstream), pinned with wrk when pinning is on.
        """
        if self.server_cpus is not None:
            cmd = ["taskset", "-c", LOAD_CPUS if load else self.server_cpus, *cmd]
        log = (self.logdir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                cmd,
                env={**os.environ, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.started.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The end of a server's log (for error messages)."""
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.logdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL what is left of it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The group may outlive its leader (uvicorn workers, nginx workers): make sure.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def stop_all(self) -> None:
        """Stop every started server, the last started first."""
        while self.started:
            _name, proc = self.started.pop()
            self.stop(proc)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and all their descendants."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
    return total


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes and their descendants."""
    import psutil

    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
    return total


# --------------------------------------------------------------------------- nginx
def query_body() -> bytes:
    """A Salesforce-like query response with 9 Account records (~1.5 KB of JSON)."""
    records = [
        {
            "attributes": {
                "type": "Account",
                "url": f"/services/data/v60.0/sobjects/Account/001bx00000{i:05d}AAA",
            },
            "Id": f"001bx00000{i:05d}AAA",
            "Name": f"Account number {i}",
        }
        for i in range(9)
    ]
    return json.dumps({"totalSize": 9, "done": True, "records": records}).encode()


def render_nginx_conf(template: str, **values: object) -> str:
    """Fill ``{{name}}`` placeholders (nginx's own ``$vars`` and braces stay as they are).

    Raises ``KeyError`` naming a placeholder left without a value.
    """
    rendered = template
    for key, value in values.items():
        rendered = rendered.replace("{{" + key + "}}", str(value))
    left = re.search(r"\{\{(\w+)\}\}", rendered)
    if left:
        raise KeyError(left.group(1))
    return rendered


def start_nginx(
    processes: Processes,
    workdir: Path,
    template: str,
    name: str,
    *,
    load: bool = False,
    **values: object,
) -> int:
    """Render ``bench/nginx/<template>`` into ``workdir`` and run it; returns its port."""
    nginx = find_tool("nginx")
    if nginx is None:
        raise RuntimeError("nginx is not installed (run with --install)")
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the 0700 workdir
    text = render_nginx_conf(
        (NGINX_TEMPLATES / template).read_text(), workdir=workdir, port=port, user=user, **values
    )
    conf = workdir / f"{name}.conf"
    conf.write_text(text)
    proc = processes.start(
        name,
        [nginx, "-c", str(conf), "-p", str(workdir), "-e", str(workdir / f"{name}-error.log")],
        load=load,
    )
    wait_port(port, proc)
    return port


def start_upstream(processes: Processes, workdir: Path) -> int:
    """(a) nginx serving :func:`query_body` for any path; returns its port."""
    docroot = workdir / "www"
    docroot.mkdir(exist_ok=True)
    (docroot / "query.json").write_bytes(query_body())
    return start_nginx(
        processes,
        workdir,
        "upstream.conf",
        "upstream",
        load=True,
        docroot=docroot,
        access_token=ACCESS_TOKEN,
        org_id=ORG_ID,
        user_id=USER_ID,
    )


# --------------------------------------------------------------------------- uvicorn / tokenkeep
def uvicorn_cmd(
    app: str, port: int, *, app_dir: Path = BENCH_DIR, factory: bool = False, workers: int = 1
) -> list[str]:
    """uvicorn with uvloop and httptools, no access log, no Server/Date headers."""
    cmd = [
        sys.executable, "-m", "uvicorn", app, "--app-dir", str(app_dir),
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
        "--no-server-header", "--no-date-header",
    ]  # fmt: skip
    if factory:
        cmd.append("--factory")
    if workers > 1:
        cmd += ["--workers", str(workers)]
    return cmd


def granian_cmd(
    app: str,
    port: int,
    *,
    interface: str = "asgi",
    app_dir: Path = BENCH_DIR,
    factory: bool = False,
) -> list[str]:
    """granian (Rust HTTP server) on uvloop, HTTP/1 only, no websockets, no access log."""
    cmd = [
        sys.executable, "-m", "granian", app, "--working-dir", str(app_dir),
        "--interface", interface, "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "1", "--no-ws", "--log-level", "warning",
    ]  # fmt: skip
    if factory:
        cmd.append("--factory")
    return cmd


# Diagnostic only (setup "tokenkeep-gcfreeze"): once the gateway has started, collect and
# freeze every object that exists then (the imported libraries, the app, the store), so a
# full collection no longer walks them. Patched in at run time by the launcher below; the
# product code is not changed.
_GC_FREEZE = """
import gc, tokenkeep.runtime as _rt
_start = _rt.Gateway.start
async def _start_then_freeze(self, *args, **kwargs):
    result = await _start(self, *args, **kwargs)
    gc.collect()
    gc.freeze()
    return result
_rt.Gateway.start = _start_then_freeze
"""
_UVLOOP = "import asyncio, uvloop\nasyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"


def tokenkeep_cmd(*args: str, uvloop_policy: bool = False, gc_freeze: bool = False) -> list[str]:
    """The ``tokenkeep`` CLI of this interpreter.

    Diagnostics: ``uvloop_policy`` installs uvloop's event-loop policy first (what ``tokenkeep
    serve`` gains when its ``asyncio.run`` gets a uvloop loop); ``gc_freeze`` calls
    ``gc.freeze()`` right after the gateway's start-up.
    """
    code = "from tokenkeep.cli import main\n"
    if uvloop_policy:
        code = _UVLOOP + code
    if gc_freeze:
        code = _GC_FREEZE + code
    return [sys.executable, "-c", code + "main()", *args]


@dataclass(frozen=True)
class TokenkeepData:
    """A prepared tokenkeep data dir: its environment, the connection and an API key."""

    env: dict[str, str]
    connection_id: str
    api_key: str


def tokenkeep_env(data_dir: Path) -> dict[str, str]:
    """Settings for a benchmark gateway: SQLite in ``data_dir``, quiet, no scheduler."""
    return {
        "TOKENKEEP_DATA_DIR": str(data_dir),
        "TOKENKEEP_DATABASE_URL": "",
        "TOKENKEEP_ALLOW_INSECURE_LOOPBACK": "true",
        "TOKENKEEP_SCHEDULER_ENABLED": "false",
        "TOKENKEEP_LOG_LEVEL": "WARNING",
        "TOKENKEEP_LOG_FORMAT": "json",
        "TOKENKEEP_HOST": "127.0.0.1",
    }


def _cli(env: Mapping[str, str], *args: str, secret_env: Mapping[str, str] | None = None) -> str:
    out = subprocess.run(
        tokenkeep_cmd(*args),
        env={**os.environ, **env, **(secret_env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"tokenkeep {' '.join(args[:2])} failed: {out.stderr.strip()[-500:]}")
    return out.stdout


def prepare_tokenkeep(
    data_dir: Path,
    *,
    instance_url: str,
    login_url: str,
    access_token: str,
    refresh_token: str | None = None,
    client_id: str = "bench-client-id",
    client_secret: str = "bench-client-secret",
    connection_id: str = "bench",
    org_id: str = ORG_ID,
    user_id: str = USER_ID,
    session_timeout: int = 7 * 24 * 3600,
) -> TokenkeepData:
    """Integration + imported connection + API key, through the real CLI (no server needed).

    ``session_timeout`` (the longest the API accepts) keeps the imported token "fresh" for
    the whole run, so the proxy never tries to refresh it.
    """
    env = tokenkeep_env(data_dir)
    _cli(
        env, "integrations", "put", "bench",
        "--client-id", client_id, "--login-url", login_url,
        "--session-timeout", str(session_timeout),
        secret_env={"TOKENKEEP_CLIENT_SECRET": client_secret},
    )  # fmt: skip
    secrets_env = {"TOKENKEEP_ACCESS_TOKEN": access_token}
    if refresh_token:
        secrets_env["TOKENKEEP_REFRESH_TOKEN"] = refresh_token
    _cli(
        env, "connections", "import",
        "--integration", "bench", "--connection-id", connection_id,
        "--instance-url", instance_url,
        "--id-url", f"{login_url}/id/{org_id}/{user_id}",
        secret_env=secrets_env,
    )  # fmt: skip
    key = _cli(env, "keys", "create-api-key", "--name", "bench").strip().splitlines()[-1].strip()
    return TokenkeepData(env=env, connection_id=connection_id, api_key=key)


def serve_has_workers() -> bool:
    """Whether ``tokenkeep serve`` has a ``--workers`` option."""
    out = subprocess.run(
        tokenkeep_cmd("serve", "--help"), capture_output=True, text=True, check=False
    )
    return "--workers" in out.stdout


def start_tokenkeep(
    processes: Processes,
    data: TokenkeepData,
    name: str,
    workers: int = 1,
    *,
    uvloop_policy: bool = False,
    gc_freeze: bool = False,
    env: dict[str, str] | None = None,
) -> tuple[int, subprocess.Popen[bytes]]:
    """``tokenkeep serve`` on a free port (``env`` on top of the data dir's); returns
    (port, process)."""
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--no-scheduler"]
    if workers > 1:
        args += ["--workers", str(workers)]
    proc = processes.start(
        name,
        tokenkeep_cmd(*args, uvloop_policy=uvloop_policy, gc_freeze=gc_freeze),
        {**data.env, **(env or {})},
    )
    try:
        wait_port(port, proc, timeout=60)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{processes.log_tail(name)}") from None
    return port, proc


# --------------------------------------------------------------------------- wrk
def to_ms(text: str) -> float:
    """wrk's ``812.00us`` / ``1.20ms`` / ``2.00s`` as milliseconds (NaN if unreadable)."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return {"us": value / 1000, "ms": value, "s": value * 1000, "m": value * 60_000}[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests, rps, p50/p90/p99 (ms), failures and socket errors from ``wrk --latency``."""

    def need(pattern: str) -> str:
        match = re.search(pattern, out, re.M)
        if match is None:
            raise ValueError(f"wrk output without {pattern!r}:\n{out}")
        return match.group(1)

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": float(need(r"(\d+) requests in")),
        "rps": float(need(r"^Requests/sec:\s+([\d.]+)")),
        # Anchored: "93.50%" in the Thread Stats table is not the 50th percentile.
        "p50": to_ms(need(r"^\s+50%\s+(\S+)")),
        "p90": to_ms(need(r"^\s+90%\s+(\S+)")),
        "p99": to_ms(need(r"^\s+99%\s+(\S+)")),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def run_wrk(
    url: str,
    connections: int,
    seconds: float,
    *,
    headers: Mapping[str, str] | None = None,
    cpu_pids: list[int] | None = None,
    other_pids: list[int] | None = None,
    warmup: float = 1.0,
    cpus: str | None = None,
) -> dict[str, Any]:
    """One ``wrk -t1 --latency`` run (after a short warm-up), plus CPU µs per request.

    ``cpu_pids``: the proxy's processes (their CPU per request is reported);
    ``other_pids``: the rest of the set-up (the upstream), counted as ours, not foreign;
    ``cpus``: run wrk under ``taskset -c cpus``.
    """

    def args(duration: float) -> list[str]:
        cmd = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "--timeout",
            "5s",
        ]
        for key, value in (headers or {}).items():
            cmd += ["-H", f"{key}: {value}"]
        pin = ["taskset", "-c", cpus] if cpus is not None else []
        return [*pin, *cmd, url]

    if warmup > 0:  # fills pools and caches; its numbers are thrown away
        subprocess.run(args(warmup), capture_output=True, check=True, timeout=warmup + 30)
    load_before = load_average()
    cpu_before = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    ours_before = cpu_seconds(other_pids or []) + _children_cpu()
    busy_before, wall_before = machine_busy_seconds(), time.monotonic()
    out = subprocess.run(
        args(seconds), capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    busy_after, wall_after = machine_busy_seconds(), time.monotonic()
    cpu_after = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    ours_after = cpu_seconds(other_pids or []) + _children_cpu()
    result: dict[str, Any] = parse_wrk(out)
    result["load"] = max(load_before, load_average())
    # Cores used by everything else on the machine during the run (other users' work, the
    # hypervisor's steal): the noise indicator for this sample.
    ours = (cpu_after - cpu_before) + (ours_after - ours_before)
    result["foreign"] = max(0.0, (busy_after - busy_before - ours) / (wall_after - wall_before))
    requests = result["requests"]
    result["cpu_us"] = (
        (cpu_after - cpu_before) / requests * 1e6 if cpu_pids and requests else float("nan")
    )
    if result["non2xx"]:
        raise RuntimeError(f"{url}: {result['non2xx']:.0f} non-2xx responses under load")
    return result
