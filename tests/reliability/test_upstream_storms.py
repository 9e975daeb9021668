"""Upstream limit and 503 storms: no retry amplification, other orgs keep their latency.

Issue 13, suite item 10. A real gateway (uvicorn, SQLite) in front of the emulator with two
orgs. Org A's data API answers every call, after an injected delay of ``DELAY`` seconds,
with Salesforce's ``REQUEST_LIMIT_EXCEEDED`` (403, its real answer; also as a 429) or a 503,
carrying a ``Retry-After``. ``STORM`` concurrent client calls go to A while org B's calls run
alongside. Proven with the emulator's request log and the answers:

* no retry amplification: A's upstream calls == A's client calls (the gateway never retries
  a limit or a 503), and each client gets Salesforce's status, errorCode and Retry-After;
* B is not queued behind A: all B's calls succeed, and the slowest of them stays below the
  injected delay (a B call that waited for one of A's connections would take longer).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx
import pytest

from tokenkeep.harness import GatewayUnderTest, running_gateway

LIMITS = "/services/data/v60.0/limits"
STORM = 150  # concurrent client calls to org A
DELAY = 2.0  # seconds the emulator holds each of A's calls before the error
B_CALLS = 40
RETRY_AFTER = 120


def _client(gw: GatewayUnderTest, connection_id: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gw.proxy_url(connection_id),
        headers={"Authorization": f"Bearer {gw.api_key.reveal()}"},
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        timeout=30,
    )


async def _timed_b_calls(sf: httpx.AsyncClient, n: int) -> list[float]:
    """``n`` sequential calls for org B; each must succeed. Returns their latencies."""
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        answer = await sf.get(LIMITS)
        latencies.append(time.perf_counter() - start)
        assert answer.status_code == 200, answer.text
    return latencies


STORMS = {
    "limit_403": {"kind": "limit", "status": 403},
    "limit_429": {"kind": "limit", "status": 429},
    "unavailable_503": {"kind": "error", "status": 503},
}


@pytest.mark.slow
@pytest.mark.parametrize("storm", sorted(STORMS))
async def test_a_storm_on_one_org_is_not_amplified_and_leaves_other_orgs_alone(
    tmp_path: Path, storm: str
) -> None:
    async with running_gateway(tmp_path / "tk", orgs=2) as gw:
        emu = gw.emulator
        org_a = (await gw.connect("a", org=0, via="import")).org_id
        org_b = (await gw.connect("b", org=1, via="import")).org_id
        async with _client(gw, "a") as sf_a, _client(gw, "b") as sf_b:
            await _timed_b_calls(sf_b, 5)  # warm the pools and the token caches
            assert (await sf_a.get(LIMITS)).status_code == 200
            before = await _timed_b_calls(sf_b, B_CALLS)

            emu.admin.add_fault(
                target="data",
                org_id=org_a,
                latency_seconds=DELAY,
                retry_after_seconds=RETRY_AFTER,
                **STORMS[storm],
            )
            log_mark = len(emu.admin.requests(org_id=org_a, path="/services/data"))
            started = time.perf_counter()
            storm_task = asyncio.gather(*(sf_a.get(LIMITS) for _ in range(STORM)))
            await asyncio.sleep(0.3)  # A's calls are now held upstream
            during = await _timed_b_calls(sf_b, B_CALLS)
            answers = await storm_task
            storm_seconds = time.perf_counter() - started

        upstream_a = emu.admin.requests(org_id=org_a, path="/services/data")[log_mark:]
        upstream_b = emu.admin.requests(org_id=org_b, path="/services/data")

    expected = STORMS[storm]
    for answer in answers:
        assert answer.status_code == expected["status"]
        code = "REQUEST_LIMIT_EXCEEDED" if expected["kind"] == "limit" else "SERVER_UNAVAILABLE"
        assert answer.json()[0]["errorCode"] == code
        assert answer.headers["Retry-After"] == str(RETRY_AFTER)  # Salesforce's, passed on
    # No amplification: one upstream call per client call, never a retry.
    assert len(upstream_a) == STORM
    assert len(upstream_b) == 5 + 2 * B_CALLS
    # B waited on nothing of A's: every call faster than A's injected delay.
    assert max(during) < DELAY, [round(x, 2) for x in during]
    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(
        f"\n{storm}: {STORM} calls to A in {storm_seconds:.2f}s; B p50 {p50_before * 1000:.1f} ms"
        f" before, {p50_during * 1000:.1f} ms during (max {max(during) * 1000:.1f} ms)"
    )
