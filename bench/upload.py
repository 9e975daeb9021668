"""Memory under a large upload: a Bulk API 2.0 CSV streamed through tokenkeep to the emulator.

Run alone (``python bench/upload.py [--mb 100]``) or as the last part of bench/proxy.py.

The emulator (``tokenkeep emulator``) and the gateway (``tokenkeep serve``, 1 worker) each
run in their own process. An authorization-code grant (the admin API's headless authorize)
gets a real emulator session with a refresh token, which is imported as a connection; then
through ``/c/<id>/...``: create an ingest job, ``PUT`` the CSV in 1 MiB chunks with a
``Content-Length`` (larger than the retry buffer, so the proxy must stream), mark it
``UploadComplete`` and read the job back. A thread samples the gateway's RSS every 20 ms;
the figure that matters is peak minus idle: it must not grow with the body.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from harness import (
    Interrupted,
    Processes,
    free_port,
    prepare_tokenkeep,
    rss_bytes,
    signals_unwind,
    start_tokenkeep,
    tokenkeep_cmd,
    wait_port,
)

CHUNK = 1024 * 1024
HEADER = b"Name,Description\n"


def _start_emulator(processes: Processes, workdir: Path) -> dict[str, Any]:
    """``tokenkeep emulator --orgs 1 --json`` on free ports; its JSON document."""
    for _attempt in range(5):  # the org listens on port + 1, which must be free too
        port = free_port()
        proc = processes.start(
            "emulator", tokenkeep_cmd("emulator", "--port", str(port), "--orgs", "1", "--json")
        )
        log = workdir / "emulator.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    doc: dict[str, Any] = json.loads(line)
                    wait_port(port, proc)
                    return doc
            time.sleep(0.1)
        processes.stop(proc)
        log.unlink(missing_ok=True)
    raise RuntimeError("the emulator did not start (see emulator.log)")


def _post(url: str, form: dict[str, str] | None = None, body: Any = None) -> dict[str, Any]:
    if body is not None:
        data, kind = json.dumps(body).encode(), "application/json"
    else:
        data, kind = (
            urllib.parse.urlencode(form or {}).encode(),
            "application/x-www-form-urlencoded",
        )
    request = urllib.request.Request(url, data=data, headers={"Content-Type": kind})
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def _authorization_code_grant(doc: dict[str, Any]) -> dict[str, Any]:
    """A real emulator session with a refresh token (the admin API's headless authorize)."""
    app, user = doc["apps"][0], doc["orgs"][0]["users"][0]
    redirect = "http://localhost/callback"
    code = _post(
        doc["admin_url"] + "/authorize",
        body={
            "client_id": app["client_id"],
            "username": user["username"],
            "redirect_uri": redirect,
        },
    )["code"]
    return _post(
        doc["login_url"] + "/services/oauth2/token",
        form={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
        },
    )


class _RssSampler(threading.Thread):
    """Samples the RSS of some processes until stopped; keeps the peak."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes(self.pids))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(5)
        return self.peak


async def _upload(base: str, api_key: str, size: int, gateway_pid: int) -> dict[str, float]:
    import aiohttp

    auth = {"Authorization": f"Bearer {api_key}"}
    chunks = max(1, size // CHUNK)
    # One 1 MiB block of 64-byte rows, sent again and again (inserting duplicates is fine).
    block = b"".join(b"Account %09d,%s\n" % (j, b"x" * 45) for j in range(CHUNK // 64))
    total = len(HEADER) + chunks * len(block)

    async def body() -> AsyncIterator[bytes]:
        yield HEADER
        for _ in range(chunks):
            yield block

    ingest = f"{base}/services/data/v60.0/jobs/ingest"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        async with http.post(
            ingest, json={"object": "Account", "operation": "insert"}, headers=auth
        ) as resp:
            job = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"create job answered {resp.status}: {job}")
        await asyncio.sleep(1.0)  # let the gateway settle after its first calls
        idle = rss_bytes([gateway_pid])
        sampler = _RssSampler([gateway_pid])
        sampler.start()
        started = time.monotonic()
        try:
            async with http.put(
                f"{ingest}/{job['id']}/batches",
                data=body(),
                headers={**auth, "Content-Type": "text/csv", "Content-Length": str(total)},
            ) as resp:
                text = await resp.text()
                if resp.status != 201:
                    raise RuntimeError(f"upload answered {resp.status}: {text[:300]}")
            seconds = time.monotonic() - started
        finally:
            peak = sampler.stop()
        async with http.patch(
            f"{ingest}/{job['id']}", json={"state": "UploadComplete"}, headers=auth
        ) as resp:
            await resp.read()
        async with http.get(f"{ingest}/{job['id']}", headers=auth) as resp:
            status = await resp.json()
    return {
        "size_mb": total / CHUNK,
        "rows_sent": float(chunks * (CHUNK // 64)),
        "rss_idle_mb": idle / 1e6,
        "rss_peak_mb": max(peak, idle) / 1e6,
        "mb_per_s": total / 1e6 / seconds,
        "rows": float(
            status.get("numberRecordsProcessed", 0) + status.get("numberRecordsFailed", 0)
        ),
    }


def measure_upload(processes: Processes, workdir: Path, size_mb: int) -> dict[str, float]:
    """Start the emulator and a gateway, upload ``size_mb`` MiB, stop them; the figures."""
    workdir.mkdir(parents=True, exist_ok=True)
    own = Processes(workdir)
    try:
        doc = _start_emulator(own, workdir)
        token = _authorization_code_grant(doc)
        org_id, user_id = token["id"].rstrip("/").split("/")[-2:]
        data = prepare_tokenkeep(
            workdir / "tokenkeep",
            instance_url=token["instance_url"],
            login_url=doc["login_url"],
            access_token=token["access_token"],
            refresh_token=token.get("refresh_token"),
            client_id=doc["apps"][0]["client_id"],
            client_secret=doc["apps"][0]["client_secret"],
            org_id=org_id,
            user_id=user_id,
            session_timeout=7200,
        )
        port, proc = start_tokenkeep(own, data, "upload-gateway")
        base = f"http://127.0.0.1:{port}/c/{data.connection_id}"
        result = asyncio.run(_upload(base, data.api_key, size_mb * CHUNK, proc.pid))
        print(
            f"upload {result['size_mb']:.0f} MiB: gateway RSS {result['rss_idle_mb']:.0f} MB idle, "
            f"{result['rss_peak_mb']:.0f} MB peak, {result['mb_per_s']:.0f} MB/s, "
            f"{result['rows']:,.0f} rows",
            flush=True,
        )
        return result
    finally:
        own.stop_all()


def main() -> int:
    """Standalone run."""
    parser = argparse.ArgumentParser(description="100 MB upload through tokenkeep: gateway RSS.")
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tk-bench-upload-"))
    processes = Processes(workdir)
    try:
        with signals_unwind():
            print(json.dumps(measure_upload(processes, workdir, args.mb), indent=2))
    except (KeyboardInterrupt, Interrupted):
        return 130
    finally:
        processes.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
