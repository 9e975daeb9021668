"""``tokenkeep serve --workers 2``: one scrape sees every worker (prometheus-client's
multiprocess mode), whichever worker answers it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenkeep.server import free_port

API_KEY = "tk_test_" + "w" * 32
CALLS = 40


def _total(text: str, name: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


@pytest.mark.multiprocess
def test_one_scrape_counts_the_calls_of_every_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(
        HOME=str(tmp_path / "home"),
        TOKENKEEP_DATA_DIR=str(tmp_path / "data"),
        TOKENKEEP_SECRET_KEY=API_KEY,
        TOKENKEEP_LOG_LEVEL="WARNING",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenkeep", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        # New connections each time: the kernel spreads them over both workers.
        for i in range(CALLS):
            with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
                answer = http.get(f"/c/missing{i}/services/data/v60.0/limits")
            assert answer.status_code == 404
        for _ in range(6):
            with httpx.Client(base_url=base, timeout=10) as http:
                text = http.get("/metrics").text
            assert _total(text, "tokenkeep_proxy_requests_total") == CALLS
        assert (tmp_path / "data" / "metrics-multiproc").is_dir()
        files = {p.name for p in (tmp_path / "data" / "metrics-multiproc").iterdir()}
        # counter_<pid>.db: one per worker that counted something.
        pids = {name.split("_", 1)[1] for name in files if name.startswith("counter_")}
        assert len(pids) == 2, files  # both workers wrote their values
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
