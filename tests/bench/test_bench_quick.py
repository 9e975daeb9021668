"""``scripts/bench --quick NAME``: each issue-14 benchmark runs once at a small size.

Never a timing assertion: what is checked is that the figures are produced and that the
correctness checks inside each benchmark hold (one token call per stampede, every caller
answered, no refresh under the token API's load, the "off" operation log writes nothing,
the log page is answered through an index, the upload is streamed, no connection is
refreshed twice by the 2 schedulers and their due query uses an index). nginx and wrk are
needed for token_api, logpath and memory (the tests skip without them); PostgreSQL for
stampede and logpath.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAVE_TOOLS = all(
    any((Path(d) / tool).exists() for d in ["/usr/sbin", "/usr/bin", "/usr/local/bin"])
    for tool in ("nginx", "wrk")
)
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="nginx and wrk are not installed")


def _quick(name: str, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "BENCH_JSON_DIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", name],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "| goal | measured | target |" in out.stdout  # the goals table is rendered
    result: dict[str, Any] = json.loads((tmp_path / f"{name}.json").read_text())
    return result


def _figure(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_stampede_quick_makes_one_token_call_per_connection(tmp_path: Path) -> None:
    results = _quick("stampede", tmp_path)
    for mode in ("poll", "notify"):
        r = results[mode]
        assert r["token_calls"] == 1
        assert r["refreshes"] == 1
        assert r["ok"] == r["callers"] == 200
        assert r["errors"] == []
        assert r["served_stored_token"]
        assert r["version"] == 2
        assert _figure(r["p50"])
        assert _figure(r["p99"])


@needs_tools
def test_token_api_quick_serves_the_cached_token(tmp_path: Path) -> None:
    results = _quick("token_api", tmp_path)
    assert results["served_cached"]
    assert results["version_after"] == results["version_before"]
    assert _figure(results["token_api"]["rps"])
    assert _figure(results["minimal"]["rps"])
    assert _figure(results["ratio"])


@needs_tools
@pytest.mark.slow
def test_logpath_quick_logs_only_when_on_and_pages_through_an_index(tmp_path: Path) -> None:
    results = _quick("logpath", tmp_path)
    write, query = results["write"], results["query"]
    assert write["logged"]["on"] > 0
    assert write["logged"]["off"] == 0
    assert _figure(write["on"]["rps"])
    assert _figure(write["off"]["rps"])
    assert query["rows"] == 10_000
    assert _figure(query["median_ms"])
    assert any("Index" in line for line in query["plan"])


@needs_tools
@pytest.mark.slow
def test_memory_quick_measures_idle_full_and_upload(tmp_path: Path) -> None:
    results = _quick("memory", tmp_path)
    assert results["connections"] == 2000
    for key in ("rss_empty_mb", "rss_full_mb", "fill_s"):
        assert _figure(results[key])
    upload = results["upload"]
    assert upload["size_mb"] == pytest.approx(10, rel=0.01)
    assert upload["rss_peak_mb"] >= upload["rss_idle_mb"] > 0
    assert upload["rows"] > 0


@pytest.mark.slow
def test_scheduler_quick_refreshes_every_due_connection_once(tmp_path: Path) -> None:
    results = _quick("scheduler", tmp_path)
    for engine, due, rows in (("postgresql", 500, 20_000), ("sqlite", 200, 5000)):
        r = results[engine]
        assert r["ok"], r
        assert (r["refreshed"], r["grants"], r["duplicates"], r["fenced"]) == (due, due, 0, 0)
        assert r["versions"] == {"1": rows - due, "2": due}
        assert any("ix_connections_" in line for line in r["plan"])
        for key in ("claim_ms", "rate", "steady_rate", "baseline_rate"):
            assert _figure(r[key])
