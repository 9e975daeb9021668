"""The ``tokenkeep`` command: admin commands through CliRunner, serve as a process.

``tokenkeep demo`` is tested in test_demo.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tokenkeep import __version__
from tokenkeep.cli import app
from tokenkeep.crypto import KEYS_FILE_NAME
from tokenkeep.server import free_port

IDENTITY_URL = "https://login.salesforce.com/id/00D5g000004ABCDEAA/0055g000009XYZWAAA"
ACCESS = "00D5g000004ABCD!AQ0CliAccessToken"


pytestmark = pytest.mark.usefixtures("cli_env")


def run(*args: str, ok: bool = True, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), input=stdin)
    if ok:
        assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, stdout: str, stderr: str, *needles: str) -> None:
    assert code == 1
    assert "Traceback" not in stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]


def test_version() -> None:
    _, out, _ = run("--version")
    assert out.strip() == f"tokenkeep {__version__}"


def test_admin_round_trip_on_both_engines(
    db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TOKENKEEP_DATABASE_URL", db_url)
    _, out, _ = run("db", "upgrade")
    assert "revision" in out

    run(
        "integrations",
        "put",
        "sf",
        "--client-id",
        "3MVG9cli",
        "--client-secret",
        "cli-secret",
        "--scope",
        "api",
        "--scope",
        "refresh_token",
    )
    _, out, _ = run("integrations", "show", "sf")
    shown = json.loads(out)
    assert shown["scopes"] == ["api", "refresh_token"]
    assert shown["has_client_secret"] is True
    assert "cli-secret" not in out
    _, out, _ = run("integrations", "list", "--json")
    assert [i["key"] for i in json.loads(out)] == ["sf"]

    body = {
        "connection_id": "from-file",
        "integration": "sf",
        "credentials": {
            "access_token": ACCESS,
            "refresh_token": "5AepCliRefresh",
            "instance_url": "https://acme.my.salesforce.com",
            "id": IDENTITY_URL,
        },
        "metadata": {"tenant": "t1"},
    }
    path = tmp_path / "conn.json"
    path.write_text(json.dumps(body))
    _, out, _ = run("connections", "import", str(path))
    assert "from-file" in out
    monkeypatch.setenv("TOKENKEEP_ACCESS_TOKEN", ACCESS)
    run(
        "connections",
        "import",
        "--integration",
        "sf",
        "--connection-id",
        "from-flags",
        "--instance-url",
        "https://beta.my.salesforce.com",
    )
    _, out, _ = run(
        "connections", "import", "-", stdin=json.dumps({**body, "connection_id": "from-stdin"})
    )
    assert "from-stdin" in out

    _, out, _ = run("connections", "list", "--json")
    listed = json.loads(out)
    assert [c["id"] for c in listed["data"]] == ["from-file", "from-flags", "from-stdin"]
    assert ACCESS not in out
    _, out, _ = run("connections", "list", "--json", "--org-id", "00D5g000004ABCDEAA")
    assert {c["id"] for c in json.loads(out)["data"]} == {"from-file", "from-stdin"}
    _, out, _ = run("connections", "list")
    assert "from-file" in out
    _, out, _ = run("connections", "show", "from-file")
    shown = json.loads(out)
    assert shown["org_id"] == "00D5g000004ABCDEAA"
    assert shown["has_refresh_token"] is True
    assert ACCESS not in out
    assert "5AepCliRefresh" not in out

    assert_one_line_error(*run("integrations", "delete", "sf", ok=False), "connection")
    for conn in ("from-file", "from-flags", "from-stdin"):
        run("connections", "delete", conn)
    assert_one_line_error(*run("connections", "show", "from-file", ok=False), "does not exist")
    run("integrations", "delete", "sf")
    _, out, _ = run("integrations", "list", "--json")
    assert json.loads(out) == []


def test_api_keys_create_list_revoke() -> None:
    _, out, _ = run("keys", "create-api-key", "--name", "ci")
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("tk_")
    _, out, _ = run("keys", "list", "--json")
    keys = json.loads(out)
    ci = next(k for k in keys if k["name"] == "ci")
    assert ci["revoked_at"] is None
    assert secret not in out
    _, out, _ = run("keys", "revoke", ci["id"])
    assert "revoked" in out
    _, out, _ = run("keys", "list", "--json")
    assert next(k for k in json.loads(out) if k["id"] == ci["id"])["revoked_at"] is not None
    assert_one_line_error(*run("keys", "revoke", "no-such-key", ok=False), "no-such-key")


def test_key_rotation_keeps_data_readable(cli_env: Path) -> None:
    run("integrations", "put", "sf", "--client-id", "x", "--client-secret", "s")
    os.environ["TOKENKEEP_ACCESS_TOKEN"] = ACCESS
    try:
        run(
            "connections",
            "import",
            "--integration",
            "sf",
            "--connection-id",
            "c1",
            "--instance-url",
            "https://a.my.salesforce.com",
        )
    finally:
        del os.environ["TOKENKEEP_ACCESS_TOKEN"]
    old = (cli_env / KEYS_FILE_NAME).read_text().strip()
    _, out, _ = run("keys", "rotate")
    assert "re-encrypted 2 row(s)" in out
    new = (cli_env / KEYS_FILE_NAME).read_text().strip()
    assert new.endswith(old)
    assert new != old
    new_kid = new.split(":", 1)[0]
    assert new_kid in out
    _, out, _ = run("connections", "show", "c1")
    assert json.loads(out)["id"] == "c1"
    # Only the new key is needed now: old rows were all re-encrypted.
    os.environ["TOKENKEEP_ENCRYPTION_KEYS"] = new.split(",", 1)[0]
    try:
        run("connections", "show", "c1")
    finally:
        del os.environ["TOKENKEEP_ENCRYPTION_KEYS"]


def test_configuration_errors_are_one_red_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENKEEP_PORT", "abc")
    assert_one_line_error(*run("connections", "list", ok=False), "TOKENKEEP_PORT is invalid")
    monkeypatch.delenv("TOKENKEEP_PORT")
    monkeypatch.setenv("TOKENKEEP_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    monkeypatch.setenv("TOKENKEEP_DB_CONNECT_TIMEOUT", "1")
    assert_one_line_error(*run("connections", "list", ok=False), "unavailable")


def test_wrong_encryption_key_is_refused(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("integrations", "put", "sf", "--client-id", "x", "--client-secret", "s")
    kid = (cli_env / KEYS_FILE_NAME).read_text().split(":", 1)[0]
    wrong = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    monkeypatch.setenv("TOKENKEEP_ENCRYPTION_KEYS", f"{kid}:{wrong}")
    assert_one_line_error(*run("integrations", "list", ok=False), kid)
    monkeypatch.setenv("TOKENKEEP_ENCRYPTION_KEYS", f"other:{wrong}")
    assert_one_line_error(*run("integrations", "list", ok=False), "missing")


def test_bad_import_input_is_one_red_line(tmp_path: Path) -> None:
    run("integrations", "put", "sf", "--client-id", "x")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert_one_line_error(*run("connections", "import", str(bad), ok=False), "not valid JSON")
    assert_one_line_error(
        *run("connections", "import", str(tmp_path / "missing.json"), ok=False), "cannot read"
    )
    plain = tmp_path / "plain.json"
    plain.write_text(
        json.dumps(
            {
                "integration": "sf",
                "credentials": {"access_token": "a", "instance_url": "http://x.example"},
            }
        )
    )
    assert_one_line_error(*run("connections", "import", str(plain), ok=False), "https")
    assert_one_line_error(*run("connections", "import", ok=False), "--integration")
    assert_one_line_error(*run("connections", "list", "--status", "asleep", ok=False), "--status")
    assert_one_line_error(
        *run("integrations", "put", "x", "--client-id", "y", "--auth-mode", "magic", ok=False),
        "auth_mode",
    )


# -- real processes -----------------------------------------------------------------------------
def _process_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(HOME=str(tmp_path / "home"), TOKENKEEP_DATA_DIR=str(tmp_path / "data"))
    env.update(extra)
    return env


def _tokenkeep(*args: str) -> list[str]:
    return [sys.executable, "-c", "from tokenkeep.cli import main; main()", *args]


def _serve_once(tmp_path: Path, **env: str) -> tuple[int, str, str]:
    port = free_port()
    proc = subprocess.Popen(
        _tokenkeep("serve", "--port", str(port)),
        env=_process_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(300):
            if proc.poll() is not None:
                break
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.multiprocess
def test_serve_prints_the_api_key_once_and_refuses_a_wrong_key(tmp_path: Path) -> None:
    code, out, err = _serve_once(tmp_path)
    assert code == 0, err
    assert "is listening on http://127.0.0.1:" in out
    assert "tk_" in out
    assert "API key" in out

    # Encrypted data now exists (an integration with a secret).
    env = _process_env(tmp_path)
    subprocess.run(
        _tokenkeep("integrations", "put", "sf", "--client-id", "x", "--client-secret", "s"),
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )

    code, out, err = _serve_once(tmp_path)
    assert code == 0, err
    assert "is listening on" in out
    assert "tk_" not in out

    kid = (tmp_path / "data" / KEYS_FILE_NAME).read_text().split(":", 1)[0]
    wrong = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    code, out, err = _serve_once(tmp_path, TOKENKEEP_ENCRYPTION_KEYS=f"{kid}:{wrong}")
    assert code == 1
    assert "Traceback" not in err
    assert f"encryption key {kid!r}" in err
    assert "will not start" in err
    assert "is listening" not in out


def test_key_rotation_with_keys_in_the_environment(
    cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = "k1:" + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    monkeypatch.setenv("TOKENKEEP_ENCRYPTION_KEYS", first)
    run("integrations", "put", "sf", "--client-id", "x", "--client-secret", "s")
    # Without --yes the user must confirm they saved the new value; "n" changes nothing.
    code, out, _ = run("keys", "rotate", ok=False, stdin="n\n")
    assert code == 1
    assert not (cli_env / KEYS_FILE_NAME).exists()
    run("integrations", "show", "sf")

    _, out, _ = run("keys", "rotate", "--yes")
    new_value = next(line for line in out.splitlines() if line.endswith(first))
    assert new_value.count(":") == 2  # new primary key, then k1
    assert "re-encrypted 1 row(s)" in out
    monkeypatch.setenv("TOKENKEEP_ENCRYPTION_KEYS", new_value.split(",", 1)[0])
    _, out, _ = run("integrations", "show", "sf")
    assert json.loads(out)["has_client_secret"] is True
