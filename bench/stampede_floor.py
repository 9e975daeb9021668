"""The asyncio floor of a stampede (bench/stampede.py's baseline; not a benchmark alone).

``python bench/stampede_floor.py '{"calls": N, "latency_ms": L}'``: prints ``ready``,
waits for a line on stdin, then runs N concurrent callers that join one shielded task
sleeping L ms (what the coordinator's single flight is, minus the database, the lease, the
token call over HTTP and the commit) and prints ``{"waits_ms": [...]}``, each caller's wait
from the release, as ``tests/lifecycle/stampede_worker.py`` does.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def main(calls: int, latency: float) -> None:
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    released = time.monotonic()
    waits: list[float] = []
    flight: asyncio.Task[None] | None = None

    async def call() -> None:
        nonlocal flight
        try:
            if flight is None:
                flight = asyncio.create_task(asyncio.sleep(latency))
            await asyncio.shield(flight)
        finally:
            waits.append((time.monotonic() - released) * 1000)

    await asyncio.gather(*(call() for _ in range(calls)))
    print(json.dumps({"waits_ms": [round(w, 2) for w in waits]}), flush=True)


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    asyncio.run(main(int(args["calls"]), float(args["latency_ms"]) / 1000))
