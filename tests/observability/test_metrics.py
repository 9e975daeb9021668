"""``GET /metrics`` on a real gateway in front of the emulator: what an operator graphs.

Values are read with ``prometheus_client``'s own text parser, as a scraper would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokenkeep.clock import OffsetClock
from tokenkeep.harness import GatewayUnderTest, running_gateway

QUERY = "/services/data/v60.0/query?q=SELECT+Id+FROM+Account"


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[GatewayUnderTest]:
    async with running_gateway(tmp_path / "tk", orgs=2, clock=OffsetClock()) as gw:
        yield gw


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def _scrape(gw: GatewayUnderTest, *, calls: int = 0) -> str:
    """The exposition text; with ``calls``, once that many proxied calls are counted (a
    call is counted right after its response is sent, so the client can be first)."""
    for _ in range(100):
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as http:
            answer = await http.get("/metrics")  # no API key: scrapers rarely carry one
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        counted = sum(
            v
            for (name, _), v in samples(answer.text).items()
            if name == "tokenkeep_proxy_requests_total"
        )
        if counted >= calls:
            break
        await asyncio.sleep(0.02)
    return answer.text


async def _get(gw: GatewayUnderTest, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30) as http:
        return await http.get(path)


async def test_calls_refreshes_and_connections_are_counted(gw: GatewayUnderTest) -> None:
    org = gw.emulator.orgs[0]
    await gw.connect("c1")
    await gw.connect("c2", org=1)
    for _ in range(3):
        assert (await _get(gw, f"/c/c1{QUERY}")).status_code == 200
    gw.emulator.admin.patch_org(org.org_id, {"session_timeout_seconds": 3600})
    gw.emulator.admin.advance_clock(3700)
    assert (await _get(gw, f"/c/c1{QUERY}")).headers["Tokenkeep-Cause"] == "expired"
    assert (await _get(gw, "/c/nope/services/data/v60.0/limits")).status_code == 404

    text = await _scrape(gw, calls=5)
    assert value(text, "tokenkeep_proxy_requests_total", status_class="2xx", cause="none") == 3
    assert value(text, "tokenkeep_proxy_requests_total", status_class="2xx", cause="expired") == 1
    assert value(text, "tokenkeep_proxy_requests_total", status_class="4xx", cause="none") == 1
    assert value(text, "tokenkeep_refreshes_total", result="ok") == 1
    assert value(text, "tokenkeep_refresh_duration_seconds_count", result="ok") == 1
    # 3 plain calls + the expired one's first try and replay.
    assert value(text, "tokenkeep_upstream_latency_seconds_count") == 5
    assert value(text, "tokenkeep_connections", status="active") == 2
    assert value(text, "tokenkeep_connections", status="needs_reauth") == 0
    assert value(text, "tokenkeep_log_queue_dropped_total") == 0
    assert ("tokenkeep_outbox_pending_events", ()) in samples(text)
    assert ("tokenkeep_refresh_waiters", ()) in samples(text)
    assert ("tokenkeep_scheduler_due_connections", ()) in samples(text)
    # Bounded labels only: no connection id, no org id without the setting.
    assert "c1" not in {v for (_, labels) in samples(text) for _, v in labels}
    assert org.org_id not in text
    assert gw.api_key.reveal() not in text


async def test_a_revocation_moves_the_connection_gauge(gw: GatewayUnderTest) -> None:
    user = gw.emulator.orgs[0].users[0]
    await gw.connect("c1")
    gw.emulator.admin.set_password(user.username, "N3w-passw0rd!")
    await _get(gw, f"/c/c1{QUERY}")
    text = await _scrape(gw, calls=1)
    assert value(text, "tokenkeep_connections", status="needs_reauth") == 1
    assert value(text, "tokenkeep_connections", status="active") == 0
    assert value(text, "tokenkeep_refreshes_total", result="revoked") == 1


async def test_org_ids_are_labels_only_when_asked(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "tk", orgs=1, metrics_org_label=True) as gw:
        conn = await gw.connect("c1")
        assert (await _get(gw, f"/c/c1{QUERY}")).status_code == 200
        text = await _scrape(gw, calls=1)
    assert (
        value(
            text,
            "tokenkeep_proxy_requests_total",
            status_class="2xx",
            cause="none",
            org_id=conn.org_id or "",
        )
        == 1
    )


def test_status_classes_are_bounded() -> None:
    from tokenkeep.observability.metrics import status_class

    cases: dict[Any, str] = {200: "2xx", 302: "3xx", 499: "4xx", 503: "5xx", None: "none"}
    cases[999] = "none"
    for status, expected in cases.items():
        assert status_class(status) == expected


async def test_webhook_failures_and_the_outbox_depth_are_visible(tmp_path: Path) -> None:
    from aiohttp import web

    hits = 0

    async def failing(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/hook", failing)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with running_gateway(
            tmp_path / "tk", orgs=1, webhook_poll_seconds=0.05, clock=OffsetClock()
        ) as gw:
            headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
            async with httpx.AsyncClient(base_url=gw.base_url, headers=headers) as http:
                created = await http.post(
                    "/webhooks", json={"url": f"http://127.0.0.1:{port}/hook"}
                )
                assert created.status_code == 201, created.text
            await gw.connect("c1")  # connection.created: one delivery, refused by the receiver
            for _ in range(200):
                if hits:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            text = await _scrape(gw)
    finally:
        await runner.cleanup()
    assert hits >= 1
    assert value(text, "tokenkeep_webhook_delivery_failures_total") >= 1
    assert value(text, "tokenkeep_webhook_attempts_total", outcome="retrying") >= 1
    assert value(text, "tokenkeep_outbox_pending_events") == 1  # still to deliver, later
