"""Start and drive ``durable_worker.py`` OS processes (bounded waits everywhere)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("durable_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


async def start_worker(args: dict[str, Any] | str) -> asyncio.subprocess.Process:
    """A worker with ``args``, once it printed ``ready`` (stdin open: write a line = go);
    ``"zygote"`` starts the forking worker (see :func:`fork_worker`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENKEEP_")}
    env.update(PYTHONPATH=str(SRC), TOKENKEEP_LOG_LEVEL="WARNING")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        args if isinstance(args, str) else json.dumps(args),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
    if line.strip() != b"ready":
        _, err = await asyncio.wait_for(proc.communicate(), timeout=10)
        raise AssertionError(f"worker did not start: {line!r} {err.decode()[-2000:]}")
    return proc


async def go(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()


async def result_of(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    """The worker's last JSON line (it must exit 0 within ``timeout``)."""
    out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def kill_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def fork_worker(zygote: asyncio.subprocess.Process, args: dict[str, Any]) -> int:
    """A worker forked by ``zygote`` (it starts at once, its output in ``args["out"]``);
    returns its pid."""
    assert zygote.stdin is not None
    assert zygote.stdout is not None
    zygote.stdin.write((json.dumps(args) + "\n").encode())
    await zygote.stdin.drain()
    return int(await asyncio.wait_for(zygote.stdout.readline(), timeout=30))


async def kill_pid(pid: int, timeout: float = 10) -> None:
    """SIGKILL a forked worker and wait (bounded) until the kernel has reaped it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(int(timeout / 0.01)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"worker {pid} still alive {timeout} s after SIGKILL")
