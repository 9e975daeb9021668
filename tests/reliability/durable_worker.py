"""A gateway-like worker OS process for the reliability tests (not a test module).

Usage: ``python durable_worker.py '<json>'`` with ``db_url``, ``keys`` (the exported
keyring), ``connection_id``, ``owner``, ``data_dir``, ``lease_seconds``, ``mode`` and:

* ``mode="stampede"``: ``calls`` concurrent ``fresh_token`` calls (what ``GET
  /connections/{id}/token`` and the proxy's refresh run), optionally with the event loop
  starved: ``lag_seconds`` of pure-Python spinning, 4 times, between 50 ms breathers (``cpu`` pins
  the process to one core). Prints one JSON line: ok count, the fingerprints of the tokens
  handed out (never the tokens), error names, refreshes, and with ``probe`` the emulator's
  status for a data-API call with each distinct token.
* ``mode="refresh_loop"``: forced refreshes one after another (up to ``calls``) until the
  test kills it; prints ``refreshed <version>`` after each commit.
* ``mode="steps"``: one call per stdin line after ``go`` (``fresh``: ``fresh_token``;
  ``refresh``: a forced refresh; end of input: exit), each answered with a JSON line: the
  version and fingerprint served, or the error's class name and message.

``clock_offset`` (seconds, default 0) puts the worker's host clock that far off; like a
gateway it runs on that clock corrected to the database's (``DatabaseClock``). It prints
``ready`` and waits for a line on stdin before it starts.

``python durable_worker.py zygote``: imports everything, prints ``ready``, then for each
JSON line on stdin forks a worker that starts at once (``out`` names the file its output
goes to) and prints the child's pid. Forking skips the interpreter start and the imports
(~1.5 s of CPU each), so a test can kill 50 workers in seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

from tokenkeep.clock import DatabaseClock, OffsetClock, SystemClock
from tokenkeep.config import load_settings
from tokenkeep.crypto import Keyring
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.session import create_session
from tokenkeep.store import Database, Store


async def _starve(seconds: float, done: asyncio.Event, cycles: int = 4) -> None:
    """Hold the event loop ``cycles`` times (pure Python: the GIL is released every switch
    interval, as in any CPU-bound stretch), with 50 ms breathers in between."""
    for _ in range(cycles):
        if done.is_set():
            return
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass
        await asyncio.sleep(0.05)


async def _probe(session: aiohttp.ClientSession, tokens: list[FreshToken]) -> list[int]:
    """The emulator's answer (status) to a data-API call with each distinct token."""
    statuses = []
    for token in {t.access_token.fingerprint: t for t in tokens}.values():
        async with session.get(
            f"{token.instance_url}/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {token.access_token.reveal()}"},
        ) as answer:
            statuses.append(answer.status)
    return statuses


async def _steps(coordinator: RefreshCoordinator, connection_id: str) -> None:
    loop = asyncio.get_running_loop()
    while line := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        try:
            if line == "refresh":
                token = await coordinator.refresh(connection_id)
            else:
                token = await coordinator.fresh_token(connection_id)
        except Exception as error:
            answer = {"error": type(error).__name__, "message": str(error)[:300]}
        else:
            answer = {"version": token.version, "fingerprint": token.access_token.fingerprint}
        print(json.dumps(answer), flush=True)


async def main(args: dict[str, object]) -> None:
    if args.get("cpu") is not None:
        os.sched_setaffinity(0, {int(str(args["cpu"]))})
    offset = float(str(args.get("clock_offset") or 0))
    clock = DatabaseClock(OffsetClock(offset) if offset else SystemClock())
    db = Database(str(args["db_url"]), clock=clock)
    store = Store(db=db, keyring=Keyring.parse(str(args["keys"])), clock=clock)
    settings = load_settings(
        database_url=str(args["db_url"]),
        data_dir=Path(str(args["data_dir"])),
        allow_insecure_loopback=True,
        refresh_lease_seconds=float(str(args["lease_seconds"])),
    )
    session = create_session(timeout_seconds=30)
    client = TokenEndpointClient(session, clock=clock)
    coordinator = RefreshCoordinator(
        store, client, settings=settings, clock=clock, owner=str(args["owner"])
    )
    connection_id = str(args["connection_id"])
    calls = int(str(args["calls"]))
    try:
        clock.correct(await db.clock_correction(clock))  # as the gateway does at start
        if not args.get("forked"):
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if args["mode"] == "steps":
            await _steps(coordinator, connection_id)
            return
        if args["mode"] == "refresh_loop":
            for _ in range(calls):
                token = await coordinator.refresh(connection_id)
                print(f"refreshed {token.version}", flush=True)
            return
        done = asyncio.Event()
        lag = float(str(args.get("lag_seconds") or 0))
        starver = asyncio.create_task(_starve(lag, done)) if lag > 0 else None
        results = await asyncio.gather(
            *(coordinator.fresh_token(connection_id) for _ in range(calls)),
            return_exceptions=True,
        )
        done.set()
        if starver is not None:
            await starver
        tokens = [r for r in results if not isinstance(r, BaseException)]
        errors = sorted({repr(r)[:200] for r in results if isinstance(r, BaseException)})
        print(
            json.dumps(
                {
                    "ok": len(tokens),
                    "fingerprints": sorted({t.access_token.fingerprint for t in tokens}),
                    "probes": await _probe(session, tokens) if args.get("probe") else [],
                    "versions": sorted({t.version for t in tokens}),
                    "errors": errors,
                    "refreshes": coordinator.refreshes,
                }
            ),
            flush=True,
        )
    finally:
        await session.close()
        await db.close()


def zygote() -> None:
    """Fork a worker per stdin line (children reaped by the kernel: SIGCHLD ignored)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("ready", flush=True)
    for line in sys.stdin:
        args = json.loads(line)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            out = os.open(str(args["out"]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, 1)
            os.dup2(out, 2)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            code = 0
            try:
                asyncio.run(main({**args, "forked": True}))
            except BaseException:
                code = 1
            finally:
                sys.stdout.flush()
                os._exit(code)
        print(pid, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "zygote":
        zygote()
    else:
        asyncio.run(main(json.loads(sys.argv[1])))
