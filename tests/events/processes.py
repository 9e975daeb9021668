"""A ``tokenkeep serve`` OS process for the multi-process webhook tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from tests.events.receiver import eventually

from tokenkeep.server import free_port


@contextlib.asynccontextmanager
async def serve_process(
    tmp_path: Path, *, env: dict[str, str], name: str = "process"
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """Start ``python -m tokenkeep serve`` with ``env`` (``TOKENKEEP_*``) on a free port;
    yield the process and its base URL once ``/readyz`` answers. Killed at exit."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    full_env.update(
        TOKENKEEP_DATA_DIR=str(tmp_path / name),
        TOKENKEEP_ALLOW_INSECURE_LOOPBACK="true",
        TOKENKEEP_LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src")]),
        **env,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tokenkeep",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-scheduler",
        ],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:

            async def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"tokenkeep serve exited with {proc.returncode}")
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, within=30.0, step=0.1)
        yield proc, base_url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=20)
