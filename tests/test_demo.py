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
STEPS = (
    "✓ 1. Register the connected app",
    "✓ 2. Connect two orgs through the hosted connect flow",
    "✓ 3. Send proxied calls",
    "✓ 4. Two hours pass: sessions expire (cause: expired)",
    "✓ 5. A session dies earlier than expected (cause: expired)",
    "✓ 6. A user changes their password (cause: revoked)",
    "✓ 7. An org goes into maintenance (cause: maintenance)",
    "✓ 8. An org turns on API Client Control (cause: api_client_control)",
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
    assert "10 concurrent calls through acme → 10 x 200; exactly 1 refresh grant" in out
    assert "replayed once → the app got 200 (1 refresh grant, 2 upstream calls)" in out
    assert "Tokenkeep-Cause: revoked after exactly 1 refresh attempt" in out
    assert "acme is now needs_reauth (revoked" in out
    assert "the next call got 409 needs_reauth without reaching Salesforce" in out
    assert "503 org_write_paused" in out
    assert "writes resumed" in out
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
        assert {c["id"] for c in answer.json()["data"]} == {"acme", "globex"}
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
    # 1 after the expiry, 1 after the early death, 1 (refused) after the password change,
    # 1 for globex's expired token before maintenance: never a loop.
    assert refresh_grants == 4
    assert "needs_reauth" in out.split("Connections")[-1]
