"""``tokenkeep demo``: the tour a new user sees first.

As a real process (``--no-wait``, and the interactive mode stopped with Ctrl-C), and the tour
function in-process, where every secret of the run (tokens, client secret, passwords,
encryption keys) is known and must not appear in what the tour prints.
"""

from __future__ import annotations

import io
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from tokenkeep.demo import demo_environment, run_tour
from tokenkeep.server import free_port

API_KEY = re.compile(r"tk_[A-Za-z0-9_-]{43}")
# The shapes of the emulator's credentials: access tokens "<org id>!AQ...", refresh tokens
# "5Aep861...", authorization codes "aPrx...".
TOKEN_SHAPES = ("!AQ", "5Aep861", "aPrx")
WORKER_ADDRESS = "127.0.0.3"  # the ip_locked step's direct-mode worker


def _bindable(address: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


IP_LOCK_RUNS = _bindable(WORKER_ADDRESS)
STEPS = (
    "✓ 1. Register the connected app",
    "✓ 2. Connect three orgs through the hosted connect flow",
    "✓ 3. Send proxied calls",
    "✓ 4. Two hours pass: every session is renewed before use",
    "✓ 5. A session dies earlier than expected (cause: expired)",
    "✓ 6. An org moves to another instance (cause: wrong_instance)",
    "✓ 7. An org goes into maintenance (cause: maintenance)",
    ("✓" if IP_LOCK_RUNS else "○")
    + " 8. An org locks sessions to their IP address (cause: ip_locked)",
    "✓ 9. An org turns on API Client Control (cause: api_client_control)",
    "✓ 10. A user changes their password (cause: revoked)",
)
# Each cause step: (number, connection, cause, confidence, status when concluded,
# Salesforce's → the caller's status, the connection's status in the summary).
CAUSES = (
    (5, "acme", "expired", r"\w+", "active", "401 → 200", "active"),
    (6, "initech", "wrong_instance", "high", "active", "401 → 200", "active"),
    (7, "globex", "maintenance", r"\w+", "active", "503 → 503 + Retry-After", "active"),
    (8, "initech", "ip_locked", "high", "action_required", "401 (direct) → 424", "action_required"),
    (
        9,
        "globex",
        "api_client_control",
        "high",
        "action_required",
        "401 → 424",
        "action_required → active",
    ),
    (10, "acme", "revoked", "high", "needs_reauth", "401 → 409", "needs_reauth"),
)
QUERY_401 = "GET /services/data/v60.0/query → 401 INVALID_SESSION_ID"
MAINTENANCE_503 = (
    "POST /services/data/v60.0/sobjects/Account → 503 "
    "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    (tmp_path / "tmp").mkdir()
    env.update(
        HOME=str(tmp_path / "home"),
        TMPDIR=str(tmp_path / "tmp"),
        TOKENKEEP_DATA_DIR=str(tmp_path / "data"),
        COLUMNS="200",
    )
    return env


def _tokenkeep(*args: str) -> list[str]:
    return [sys.executable, "-c", "from tokenkeep.cli import main; main()", *args]


def _assert_tour_output(out: str) -> None:
    for step in STEPS:
        assert step in out, f"missing {step!r} in:\n{out}"
    assert "✗" not in out, out
    assert "30 concurrent calls (10 per connection) → 30 x 200; exactly one refresh grant" in out
    # Each cause: the failing call, then tokenkeep's verdict with the connection's status,
    # then its row in the summary table.
    assert out.count(QUERY_401) >= 4, out
    assert MAINTENANCE_503 in out
    assert "1 refresh grant, 2 upstream calls: the 401 and the replay" in out
    assert "tokenkeep learned acme's session timeout: 15 min" in out
    assert "503 org_write_paused (Retry-After: " in out
    assert "writes resumed" in out
    assert "after exactly 1 refresh attempt (invalid_grant), no refresh loop" in out
    assert "the next call got 409 needs_reauth without reaching Salesforce" in out
    assert "POST /connections/globex/diagnose → active" in out
    summary = out.rsplit("The six causes, told apart", maxsplit=1)[-1]
    for number, conn, cause, confidence, status, codes, final in CAUSES:
        if cause == "ip_locked" and not IP_LOCK_RUNS:
            assert f"cannot bind {WORKER_ADDRESS}" in out
            continue
        said = rf"tokenkeep says +{cause} · {confidence} confidence · connection {status} "
        assert re.search(said, out), f"no verdict {said!r} in:\n{out}"
        row = rf"✓ {number}\. +{conn} +{cause} +{re.escape(codes)} +.+ {re.escape(final)} *$"
        assert re.search(row, summary, re.MULTILINE), f"no row {row!r} in:\n{summary}"
    if IP_LOCK_RUNS:
        assert f"(a worker on {WORKER_ADDRESS})" in out
        assert f"obtained from 127.0.0.1 and refused from {WORKER_ADDRESS}" in out
    for shape in TOKEN_SHAPES:
        assert shape not in out, f"a credential of shape {shape!r} was printed"


@pytest.mark.multiprocess
def test_demo_no_wait_tours_every_step_and_exits(tmp_path: Path) -> None:
    proc = subprocess.run(
        _tokenkeep("demo", "--no-wait", "--port", "0"),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    _assert_tour_output(out)
    assert "every step passed" in out
    assert "Traceback" not in out + proc.stderr
    # The ready key is shown once, at the end; it is the only credential printed.
    keys = API_KEY.findall(out + proc.stderr)
    assert len(keys) == 1, keys
    assert out.rindex(keys[0]) > out.index("the demo is ready")
    for shape in TOKEN_SHAPES:
        assert shape not in proc.stderr
    # A throw-away data dir: removed at exit; the user's own data dir is never touched.
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "data").exists()


def _read_until(proc: subprocess.Popen[bytes], marker: str, deadline: float) -> str:
    """Read the process's stdout (raw bytes, no buffered text layer) until ``marker``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker.encode() not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} in time; output so far:\n{seen.decode()}"
            if sel.select(timeout=left):
                chunk = os.read(fd, 65536)
                assert chunk, f"the demo ended early:\n{seen.decode()}"
                seen += chunk
    return seen.decode()


@pytest.mark.multiprocess
def test_demo_stays_up_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        _tokenkeep("demo", "--port", "0"),
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out = _read_until(proc, "Press Ctrl-C", time.monotonic() + 90)
        gateway = re.search(r"gateway +(http://127\.0\.0\.1:\d+)", out)
        assert gateway is not None, out
        # Still serving after the tour: the ready key works against the printed URL.
        import httpx

        key = API_KEY.findall(out)[-1]
        answer = httpx.get(
            f"{gateway.group(1)}/connections",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert answer.status_code == 200
        assert {c["id"] for c in answer.json()["data"]} == {"acme", "globex", "initech"}
        assert f"{gateway.group(1)}/dashboard" in out
        proc.send_signal(signal.SIGINT)
        rest_bytes, err_bytes = proc.communicate(timeout=30)
        rest, err = rest_bytes.decode(), err_bytes.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out + rest + err
    assert "Traceback" not in out + rest + err
    assert list((tmp_path / "tmp").iterdir()) == []


def _key_material(path: Path) -> list[str]:
    """The base64 keys of a keys file (``kid:key[,kid:key]``), not the short key ids."""
    return [part for part in re.split(r"[\s:,]+", path.read_text()) if len(part) >= 32]


async def test_tour_in_process_passes_and_prints_no_secret(tmp_path: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, highlight=False, soft_wrap=True)
    async with demo_environment(tmp_path / "data", port=free_port()) as env:
        result = await run_tour(env, console)
        emu = env.emulator
        secrets = {
            env.api_key.reveal(),  # the tour itself never prints the key
            *(app.client_secret for app in emu.apps),
            *(user.password for org in emu.orgs for user in org.users),
            "Changed-by-the-demo-1",
            *emu.state.access,
            *emu.state.refresh_index,
            *_key_material(tmp_path / "data" / "encryption-keys"),
        }
        refresh_grants = len(emu.admin.requests(grant_type="refresh_token"))
    out = buffer.getvalue()
    assert result.ok, out
    assert [s.number for s in result.steps] == list(range(1, len(STEPS) + 1))
    _assert_tour_output(out)
    for secret in secrets:
        assert secret not in out
    # 1 per connection after two hours, 1 after the early death, 1 for the instance move,
    # 1 (refused) after the password change: never a loop, none for the other causes.
    assert refresh_grants == 6


async def test_a_failed_required_step_ends_the_tour_without_a_traceback(tmp_path: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, highlight=False, soft_wrap=True)
    async with demo_environment(tmp_path / "data", port=free_port()) as env:
        # globex's user cannot log in: the connect step fails, the causes are not run.
        env.emulator.admin.deactivate(env.emulator.orgs[1].users[0].username)
        result = await run_tour(env, console)
    out = buffer.getvalue()
    assert not result.ok
    assert "✓ 1. Register the connected app" in out
    assert "✗ 2. Connect three orgs through the hosted connect flow" in out
    assert "skipped: Send proxied calls" in out
    assert len(result.skipped) == len(STEPS) - 2
    assert "Traceback" not in out
    assert out.count("not run") == 6
