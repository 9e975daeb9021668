"""Fixtures for the security tests: a started gateway on each engine, and a store snapshot.

The gateway is the real one (:class:`~tokenkeep.runtime.Gateway` and the ASGI app that
``tokenkeep serve`` runs) on a real database (``db_url``: SQLite and PostgreSQL), reached
over ``httpx.ASGITransport``; the schemathesis run uses a real server on loopback instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from tests.api.api_helpers import Api, start_api

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.server import build_asgi_app
from tokenkeep.store.models import (
    ConnectionRow,
    ConnectSessionRow,
    IntegrationRow,
    OperationRow,
    OutboxRow,
    WebhookEndpointRow,
)

_TABLES = {
    "integrations": IntegrationRow,
    "connections": ConnectionRow,
    "connect_sessions": ConnectSessionRow,
    "operations": OperationRow,
    "outbox": OutboxRow,
    "webhook_endpoints": WebhookEndpointRow,
}


@pytest.fixture(autouse=True)
def _no_tokenkeep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own TOKENKEEP_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.startswith("TOKENKEEP_") and name != "TOKENKEEP_TEST_PG_DSN":
            monkeypatch.delenv(name)


@pytest.fixture
async def api(db_url: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Api]:
    """A started gateway on ``db_url`` (both engines) and an authenticated client on it."""
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key=None,
        encryption_keys=None,
        scheduler_enabled=False,
        webhooks_enabled=False,
    )
    gateway, key = await start_api(settings, clock)
    transport = httpx.ASGITransport(app=build_asgi_app(gateway))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://127.0.0.1:8400",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        try:
            yield Api(gateway, client, key)
        finally:
            await gateway.stop()


async def row_counts(api: Api) -> dict[str, int]:
    """How many rows each table that a request could write holds (``nothing stored``)."""
    counts = {}
    async with api.gateway.store.db.read() as session:
        for name, model in _TABLES.items():
            counts[name] = int(await session.scalar(select(func.count()).select_from(model)) or 0)
    return counts
