"""Fixtures for the control API: a started gateway on each engine and an HTTP client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from tests.api.api_helpers import Api, start_api

from tokenkeep.clock import ManualClock
from tokenkeep.config import Settings, load_settings
from tokenkeep.server import build_asgi_app


@pytest.fixture(autouse=True)
def _no_tokenkeep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own TOKENKEEP_* variables must not leak into these tests.
    for name in list(os.environ):
        if name.startswith("TOKENKEEP_") and name != "TOKENKEEP_TEST_PG_DSN":
            monkeypatch.delenv(name)


@pytest.fixture
def api_settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings on ``db_url`` (both engines) with a small body limit."""
    return load_settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key=None,
        encryption_keys=None,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
async def api(api_settings: Settings, clock: ManualClock) -> AsyncIterator[Api]:
    """The full ASGI app (dispatcher + FastAPI) over ``httpx.ASGITransport``."""
    gateway, key = await start_api(api_settings, clock)
    app = build_asgi_app(gateway)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://gateway.test",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        try:
            yield Api(gateway, client, key)
        finally:
            await gateway.stop()
