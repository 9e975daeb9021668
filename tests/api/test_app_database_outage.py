"""PostgreSQL goes away and comes back: clear 503s, nothing half-written, self-recovery."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from tests.api.api_helpers import import_body, put_integration, start_api

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.server import build_asgi_app

ADMIN_DSN = os.environ.get("TOKENKEEP_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


class Outage:
    """Switches one PostgreSQL database off (no new connections, existing ones killed)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _admin(self, *statements: str) -> None:
        with psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5) as admin:
            for statement in statements:
                admin.execute(statement)  # type: ignore[arg-type]

    def begin(self) -> None:
        self._admin(
            f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false',
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()",
        )

    def end(self) -> None:
        self._admin(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')


@pytest.fixture
def outage(pg_url: str) -> Iterator[Outage]:
    control = Outage(pg_url.rsplit("/", 1)[1])
    yield control
    control.end()


async def test_database_outage_gives_503_and_recovers_by_itself(
    pg_url: str, outage: Outage, tmp_path: Path, clock: ManualClock
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "data",
        database_url=pg_url,
        secret_key=None,
        encryption_keys=None,
        db_connect_timeout=2,
    )
    gateway, key = await start_api(settings, clock)
    transport = httpx.ASGITransport(app=build_asgi_app(gateway))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            await put_integration(client)
            assert (
                await client.post("/connections", json=import_body("before"))
            ).status_code == 201

            outage.begin()
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "database_unavailable"
            for method, path, body in (
                ("POST", "/connections", import_body("during")),
                ("GET", "/connections", None),
                ("GET", "/connections/before", None),
                ("PUT", "/integrations/other", {"client_id": "x"}),
            ):
                response = await client.request(method, path, json=body)
                assert response.status_code == 503, (method, path, response.text)
                error = response.json()["error"]
                assert error["code"] == "database_unavailable"
                assert "unavailable" in error["message"]

            outage.end()
            # No restart, no manual step: the next requests simply work again.
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/connections/before")).status_code == 200
            # The import refused during the outage left nothing behind.
            assert (await client.get("/connections/during")).status_code == 404
            assert (await client.get("/integrations/other")).status_code == 404
            assert (
                await client.post("/connections", json=import_body("during"))
            ).status_code == 201
            ids = [c["id"] for c in (await client.get("/connections")).json()["data"]]
            assert ids == ["before", "during"]
    finally:
        await gateway.stop()
