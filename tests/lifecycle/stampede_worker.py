"""A worker OS process for the multi-process lifecycle tests (not a test module).

Usage: ``python stampede_worker.py '<json>'`` with ``db_url``, ``keys`` (the exported
keyring), ``connection_id``, ``calls``, ``owner`` and optionally ``notify`` (false: waiters
poll even on PostgreSQL; bench/stampede.py measures both) and ``warm_id`` (a connection
refreshed once before ``ready``, so that a benchmark times a warm process). It builds its
own store, token client and coordinator, prints ``ready``, waits for a line on stdin,
then runs ``calls`` concurrent ``fresh_token`` calls and prints one JSON line: the
fingerprints of the tokens its callers got (never the tokens), how many calls succeeded,
how many refreshes it made, and each caller's wait in milliseconds (``waits_ms``, from
the release to its answer).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

from tokenkeep.clock import SystemClock
from tokenkeep.config import load_settings
from tokenkeep.crypto import Keyring
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.session import create_session
from tokenkeep.store import Database, Store


async def main(args: dict[str, object]) -> None:
    clock = SystemClock()
    db = Database(str(args["db_url"]), clock=clock)
    store = Store(db=db, keyring=Keyring.parse(str(args["keys"])), clock=clock)
    settings = load_settings(database_url=str(args["db_url"]), allow_insecure_loopback=True)
    session = create_session(timeout_seconds=30)
    client = TokenEndpointClient(session, clock=clock)
    coordinator = RefreshCoordinator(
        store,
        client,
        settings=settings,
        clock=clock,
        owner=str(args["owner"]),
        notify=None if args.get("notify", True) else False,
    )
    try:
        await db.ping()
        if args.get("warm_id"):
            await coordinator.refresh(str(args["warm_id"]))
        warm = coordinator.refreshes  # not counted below
        # Like a gateway process (server.freeze_startup_heap): the start-up heap out of the
        # collector's sight, so a full collection does not re-scan it mid-stampede.
        gc.collect()
        gc.freeze()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        calls = int(str(args["calls"]))
        released = time.monotonic()
        waits: list[float] = []

        async def call() -> object:
            try:
                return await coordinator.fresh_token(str(args["connection_id"]))
            finally:
                waits.append((time.monotonic() - released) * 1000)

        results = await asyncio.gather(*(call() for _ in range(calls)), return_exceptions=True)
        tokens = [r for r in results if not isinstance(r, BaseException)]
        errors = sorted({type(r).__name__ for r in results if isinstance(r, BaseException)})
        print(
            json.dumps(
                {
                    "fingerprints": sorted({t.access_token.fingerprint for t in tokens}),
                    "versions": sorted({t.version for t in tokens}),
                    "ok": len(tokens),
                    "errors": errors,
                    "refreshes": coordinator.refreshes - warm,
                    "waits_ms": [round(w, 2) for w in waits],
                }
            ),
            flush=True,
        )
    finally:
        await coordinator.aclose()
        await session.close()
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
