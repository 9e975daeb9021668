"""``/healthz`` and ``/readyz``: liveness without auth, readiness tells the truth."""

from __future__ import annotations

from sqlalchemy import text
from tests.api.api_helpers import Api


async def test_healthz_needs_no_key(api: Api) -> None:
    response = await api.client.get("/healthz", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ready_on_a_migrated_database(api: Api) -> None:
    response = await api.client.get("/readyz", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_is_503_when_migrations_are_not_current(api: Api) -> None:
    async with api.gateway.db.write() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = '0000_old'"))
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "schema_outdated"
    assert "tokenkeep db upgrade" in error["message"]
