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
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tokenkeep.harness import GatewayUnderTest, running_gateway
from tokenkeep.proxy.upstream import UPSTREAM_POOL_LIMIT, UPSTREAM_POOL_LIMIT_PER_HOST
from tokenkeep.proxy.upstream_aiohttp import AiohttpUpstream
from tokenkeep.proxy.upstream_reqwest import ReqwestUpstream

# The proxy's behaviour holds for each upstream client (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("upstream_client")

LIMITS = "/services/data/v60.0/limits"
STORM = 100  # concurrent client calls to org A
DELAY = 5.0  # seconds the emulator holds each of A's calls before the error
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


async def _storm(
    tmp_path: Path,
    storm: str,
    calls: int,
    delay: float,
    *,
    allowed_shed: int = 0,
    allowed_errors: int = 0,
) -> None:
    """``calls`` concurrent calls to A under the fault ``storm``, B's calls alongside."""
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
                latency_seconds=delay,
                retry_after_seconds=RETRY_AFTER,
                **STORMS[storm],
            )
            log_mark = len(emu.admin.requests(org_id=org_a, path="/services/data"))
            started = time.perf_counter()
            storm_task = asyncio.gather(
                *(sf_a.get(LIMITS) for _ in range(calls)), return_exceptions=True
            )
            # B's calls start once A's calls are held upstream (bounded: 10 s at most).
            held = min(calls, UPSTREAM_POOL_LIMIT_PER_HOST) // 2
            for _ in range(200):
                if len(emu.admin.requests(org_id=org_a, path="/services/data")) - log_mark >= held:
                    break
                await asyncio.sleep(0.05)
            during = await _timed_b_calls(sf_b, B_CALLS)
            results = await storm_task
            storm_seconds = time.perf_counter() - started

        upstream_a = emu.admin.requests(org_id=org_a, path="/services/data")[log_mark:]
        upstream_b = emu.admin.requests(org_id=org_b, path="/services/data")

    expected = STORMS[storm]
    failed = [a for a in results if isinstance(a, BaseException)]
    answers = [a for a in results if isinstance(a, httpx.Response)]
    statuses = Counter(a.status_code for a in answers)
    # Only the over-pool storm tolerates a few client connections the loaded loop dropped
    # (httpx ReadError, ~1% measured; see docs/RELIABILITY.md: not root-caused yet).
    assert len(failed) <= allowed_errors, (statuses, [repr(e) for e in failed[:3]])
    code = "REQUEST_LIMIT_EXCEEDED" if expected["kind"] == "limit" else "SERVER_UNAVAILABLE"
    relayed = [a for a in answers if a.status_code == expected["status"]]
    for answer in relayed:
        assert answer.json()[0]["errorCode"] == code
        assert answer.headers["Retry-After"] == str(RETRY_AFTER)  # Salesforce's, passed on
    # Beyond its share of the pool A's calls wait in A's own queue; one that waited longer
    # than the connect timeout is shed with our 504, one the overloaded emulator dropped
    # with our 502: our error shape, at most one upstream call each.
    shed = [a for a in answers if a.status_code in (502, 504)]
    for answer in shed:
        assert answer.json()["error"]["code"] in ("upstream_timeout", "upstream_unreachable")
    assert len(relayed) + len(shed) == len(answers), statuses
    assert len(shed) <= allowed_shed, statuses
    # No amplification: never more upstream calls than client calls, never a retry.
    assert len(relayed) <= len(upstream_a) <= calls
    assert len(upstream_a) <= len(relayed) + len(shed) + len(failed)
    assert len(upstream_b) == 5 + 2 * B_CALLS
    # B waited on nothing of A's: every call faster than A's injected delay.
    assert max(during) < delay, [round(x, 2) for x in during]
    p50_before, p50_during = statistics.median(before), statistics.median(during)
    print(
        f"\n{storm}: {calls} calls to A in {storm_seconds:.2f}s; B p50 {p50_before * 1000:.1f} ms"
        f" before, {p50_during * 1000:.1f} ms during (max {max(during) * 1000:.1f} ms)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("storm", sorted(STORMS))
async def test_a_storm_on_one_org_is_not_amplified_and_leaves_other_orgs_alone(
    tmp_path: Path, storm: str
) -> None:
    await _storm(tmp_path, storm, STORM, DELAY)


async def test_one_org_cannot_take_the_whole_upstream_pool(tmp_path: Path) -> None:
    """The mechanism behind "other orgs keep their latency" past the pool's size.

    With only a total cap (512), 700 of one org's calls held 8 s made another org's next
    call wait 21.6 s behind them (measured, docs/RELIABILITY.md); 450 held: 0.04 s. Now each
    Salesforce host has its own share: the gateway's upstream session has a per-host cap
    well below the total, so the storming org queues alone.
    """
    async with running_gateway(tmp_path / "tk", orgs=2) as gw:
        await gw.connect("a", org=0, via="import")
        async with _client(gw, "a") as sf:
            assert (await sf.get(LIMITS)).status_code == 200
        upstreams = [
            service._upstream  # type: ignore[attr-defined]  # the proxy's upstream client
            for service in gw.gateway._services
            if getattr(service, "_upstream", None) is not None
        ]
        assert upstreams, "no proxy upstream client found"
        for upstream in upstreams:
            if isinstance(upstream, ReqwestUpstream):  # a semaphore per host (reqwest has none)
                assert 0 < upstream.pool_limit_per_host == UPSTREAM_POOL_LIMIT_PER_HOST
                assert 4 * upstream.pool_limit_per_host <= UPSTREAM_POOL_LIMIT
                continue
            assert isinstance(upstream, AiohttpUpstream)
            connector = upstream.session.connector
            assert connector is not None
            assert 0 < connector.limit_per_host == UPSTREAM_POOL_LIMIT_PER_HOST
            assert connector.limit == 0 or connector.limit >= 4 * connector.limit_per_host
