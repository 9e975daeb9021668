"""A scheduler OS process for the multi-process scheduler test (not a test module).

Usage: ``python scheduler_worker.py '<json>'`` with ``db_url``, ``keys``, ``owner`` and
optionally ``clock_file`` (the shared FileClock; the system clock without it),
``batch_size``, ``concurrency``, ``interval`` and ``data_dir``. Runs a RefreshScheduler,
prints ``ready``, and stops when a line (or EOF) arrives on stdin; then prints one JSON
line with its counters.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from tokenkeep.clock import Clock, FileClock, SystemClock
from tokenkeep.config import load_settings
from tokenkeep.crypto import Keyring
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.scheduler import RefreshScheduler
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.session import create_session
from tokenkeep.observability.logging import configure_logging
from tokenkeep.store import Database, Store


async def main(args: dict[str, object]) -> None:
    configure_logging(level="INFO")  # to stderr: stdout carries "ready" and the result
    clock: Clock = FileClock(str(args["clock_file"])) if "clock_file" in args else SystemClock()
    concurrency = int(args.get("concurrency", 8))  # type: ignore[call-overload]
    db = Database(str(args["db_url"]), clock=clock, blocking_pool_size=concurrency + 2)
    store = Store(db=db, keyring=Keyring.parse(str(args["keys"])), clock=clock)
    extra = {"data_dir": args["data_dir"]} if "data_dir" in args else {}
    settings = load_settings(
        database_url=str(args["db_url"]), allow_insecure_loopback=True, **extra
    )
    session = create_session(timeout_seconds=30)
    client = TokenEndpointClient(session, clock=clock)
    coordinator = RefreshCoordinator(
        store, client, settings=settings, clock=clock, owner=str(args["owner"])
    )
    scheduler = RefreshScheduler(
        store,
        coordinator,
        settings=settings,
        clock=clock,
        interval=float(args.get("interval", 60)),  # type: ignore[arg-type]
        batch_size=int(args.get("batch_size", 100)),  # type: ignore[call-overload]
        concurrency=concurrency,
    )
    try:
        await scheduler.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await scheduler.stop()
        print(
            json.dumps(
                {
                    "cycles": scheduler.cycles,
                    "refreshes": coordinator.refreshes,
                    "fenced": coordinator.fenced_writes,
                    "cpu_seconds": time.process_time(),
                }
            ),
            flush=True,
        )
    finally:
        await session.close()
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
