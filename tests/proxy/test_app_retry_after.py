"""``Retry-After`` on limits and 503s, through a whole gateway in front of the emulator.

REQUEST_LIMIT_EXCEEDED and 503s pass through WITH ``Retry-After``. The emulator,
like Salesforce most of the time, sends none: the proxy adds a documented default. When the
refresh coordinator answers 503 during a token-endpoint backoff, the header is computed from
the coordinator's ``retry_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from tokenkeep.proxy.outcome import DEFAULT_RETRY_AFTER_503, DEFAULT_RETRY_AFTER_LIMIT
from tokenkeep.store.models import ConnectionRow
from tokenkeep.testing import GatewayUnderTest

LIMITS = "/services/data/v60.0/limits"


def _proxy(gw: GatewayUnderTest, connection_id: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gw.proxy_url(connection_id),
        headers={"Authorization": f"Bearer {gw.api_key.reveal()}"},
        timeout=60,
    )


async def test_request_limit_exceeded_passes_through_with_a_retry_after(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    connection = await gw.connect("acme")
    async with _proxy(gw, "acme") as sf:
        assert (await sf.get(LIMITS)).status_code == 200
        gw.emulator.admin.patch_org(connection.org_id, {"daily_api_limit": 1})
        limited = await sf.get(LIMITS)
    assert limited.status_code == 403
    assert limited.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert limited.headers["Retry-After"] == str(DEFAULT_RETRY_AFTER_LIMIT)


async def test_a_salesforce_503_passes_through_with_a_retry_after(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("acme")
    gw.emulator.admin.add_fault(target="data", kind="error", status=503, count=1)
    async with _proxy(gw, "acme") as sf:
        answer = await sf.get(LIMITS)
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == str(DEFAULT_RETRY_AFTER_503)


async def test_the_coordinators_backoff_becomes_retry_after(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("acme")
    # The gateway learns the token has expired (as after a long idle), and the token
    # endpoint is down: the proxy's refresh fails and the coordinator backs off.
    store = gw.gateway.store
    async with store.db.write() as session:
        await session.execute(
            update(ConnectionRow)
            .where(ConnectionRow.id == "acme")
            .values(expires_at=datetime.now(UTC) - timedelta(hours=1))
        )
    gw.emulator.admin.add_fault(target="token", kind="error", status=503)
    async with _proxy(gw, "acme") as sf:
        first = await sf.get(LIMITS)
        second = await sf.get(LIMITS)  # inside the backoff: no token call at all
    for answer in (first, second):
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "upstream_unavailable"
        assert int(answer.headers["Retry-After"]) >= 1
    connection = await store.connections.get("acme")
    assert connection.next_refresh_at is not None
    backoff = (connection.next_refresh_at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    # Computed from the coordinator's retry_at, not the generic default.
    assert abs(int(second.headers["Retry-After"]) - backoff) <= 5
