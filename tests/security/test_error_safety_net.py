"""The error renderer's safety net: a database "invalid input" is a 422, never a 500.

The request schemas refuse control characters first; this proves the net under them with
the real failures: PostgreSQL refusing a NUL through the store (``psycopg.DataError``,
wrapped by SQLAlchemy), and a timestamp Python's datetime cannot hold (``OverflowError``).
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from tokenkeep.api.errors import install_error_handlers
from tokenkeep.store import Store


def _app(store: Store) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.put("/raw")
    async def put_raw() -> dict[str, str]:
        # Past every request rule, straight into the store.
        await store.integrations.put(
            "raw", provider="salesforce", client_id="a\x00b", login_url="https://x.example"
        )
        return {"stored": "yes"}

    @app.get("/overflow")
    async def overflow() -> dict[str, str]:
        return {"at": datetime.fromtimestamp(1e20, tz=UTC).isoformat()}

    return app


async def test_a_database_data_error_is_a_422_and_nothing_is_stored(store: Store) -> None:
    transport = httpx.ASGITransport(app=_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.put("/raw")
        if store.db.dialect == "sqlite":
            assert r.status_code == 200  # SQLite keeps a NUL: the schemas refuse it first
            return
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"
        assert [i.key for i in await store.integrations.list()] == []


async def test_an_overflow_is_a_422(store: Store) -> None:
    transport = httpx.ASGITransport(app=_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.get("/overflow")
    assert r.status_code == 422, r.text
    assert set(r.json()["error"]) == {"code", "message"}
