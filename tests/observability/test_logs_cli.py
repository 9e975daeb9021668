"""``tokenkeep logs``: filters, a readable table, JSON lines, and ``--follow``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tokenkeep.cli import app
from tokenkeep.cli.logs import parse_when
from tokenkeep.clock import SystemClock
from tokenkeep.config import load_settings
from tokenkeep.store import open_store

pytestmark = pytest.mark.usefixtures("cli_env")


def _insert(entries: list[dict[str, Any]]) -> None:
    async def go() -> None:
        store = await open_store(load_settings(), clock=SystemClock())
        try:
            await store.operations.insert_many(entries)
        finally:
            await store.close()

    asyncio.run(go())


def _call(org: str, status: int, cause: str | None, minutes_ago: float) -> dict[str, Any]:
    return {
        "at": datetime.now(UTC) - timedelta(minutes=minutes_ago),
        "kind": "call",
        "outcome": "ok" if status < 400 else "error",
        "connection_id": f"conn-{org}",
        "org_id": org,
        "cause": cause,
        "status_code": status,
        "duration_ms": 12.5,
        "detail": {"method": "GET", "path": "/services/data/v60.0/query", "error_code": None},
    }


def _json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_filters_and_json_lines_oldest_first() -> None:
    _insert(
        [
            _call("00DA", 200, None, 90),
            _call("00DA", 401, "expired", 30),
            _call("00DB", 503, "maintenance", 20),
            _call("00DA", 200, "expired", 10),
        ]
    )
    runner = CliRunner()
    everything = runner.invoke(app, ["logs", "--json"])
    assert everything.exit_code == 0, everything.output
    rows = _json_lines(everything.stdout)
    assert [r["status_code"] for r in rows] == [200, 401, 503, 200]  # oldest first
    org_a = _json_lines(runner.invoke(app, ["logs", "--json", "--org", "00DA"]).stdout)
    assert {r["org_id"] for r in org_a} == {"00DA"}
    assert len(org_a) == 3
    expired = _json_lines(runner.invoke(app, ["logs", "--json", "--cause", "expired"]).stdout)
    assert [r["status_code"] for r in expired] == [401, 200]
    recent = _json_lines(runner.invoke(app, ["logs", "--json", "--since", "45m"]).stdout)
    assert len(recent) == 3
    errors = _json_lines(runner.invoke(app, ["logs", "--json", "--status", "5xx"]).stdout)
    assert [r["org_id"] for r in errors] == ["00DB"]
    last = _json_lines(runner.invoke(app, ["logs", "--json", "--limit", "1"]).stdout)
    assert [r["status_code"] for r in last] == [200]
    assert last[0]["cause"] == "expired"


@pytest.mark.parametrize("columns", [80, 160])
def test_the_output_is_readable_on_narrow_and_wide_terminals(cli_env: Path, columns: int) -> None:
    _insert([_call("00DA", 401, "expired", 5)])
    env = {**os.environ, "COLUMNS": str(columns), "TOKENKEEP_DATA_DIR": str(cli_env)}
    result = subprocess.run(
        [sys.executable, "-m", "tokenkeep", "logs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines)
    for word in ("call", "conn-00DA", "00DA", "401", "expired", "/services/data/v60.0/query"):
        assert word in result.stdout
    if columns >= 120:  # a table with a header
        assert all(h in lines[1] for h in ("at", "kind", "connection", "status", "cause"))
    else:  # two lines an entry: the head, then what happened, indented
        assert lines[1].startswith(" ")
        assert "GET /services/data/v60.0/query" in lines[1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--since", "yesterday-ish"], "is not a time"),
        (["--status", "abc"], "--status"),
        (["--since", "25:00"], "is not a time of day"),
    ],
)
def test_bad_options_are_one_sentence(args: list[str], needle: str) -> None:
    _insert([])
    result = CliRunner().invoke(app, ["logs", *args])
    assert result.exit_code == 1
    assert needle in result.stderr
    assert "Traceback" not in result.output


def test_follow_prints_new_entries_once() -> None:
    _insert([_call("00DA", 200, None, 5)])

    def later() -> None:
        time.sleep(1.2)
        _insert([_call("00DA", 401, "expired", 0), _call("00DB", 200, None, 0)])

    writer = threading.Thread(target=later)
    writer.start()
    result = CliRunner().invoke(app, ["logs", "--json", "--org", "00DA", "--follow", "--for", "3"])
    writer.join()
    assert result.exit_code == 0, result.output
    rows = _json_lines(result.stdout)
    assert [r["status_code"] for r in rows] == [200, 401]  # the old one, then the new one


def test_parse_when_forms() -> None:
    now = datetime(2026, 12, 3, 15, 30, tzinfo=UTC)
    assert parse_when("15m", now) == now - timedelta(minutes=15)
    assert parse_when("2h", now) == now - timedelta(hours=2)
    assert parse_when("3d", now) == now - timedelta(days=3)
    assert parse_when("2026-12-03T14:00:00+00:00", now) == datetime(2026, 12, 3, 14, tzinfo=UTC)
    at = parse_when("14:00", now)
    assert at <= now
    assert now - at < timedelta(days=1)
    assert at.astimezone().strftime("%H:%M") == "14:00"
