"""``/webhooks`` and ``/events`` (src/tokenkeep/api/webhooks.py) on both engines: the full
ASGI app over httpx, a started gateway (its worker on a ManualClock), a real receiver."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook
from tests.api.api_helpers import Api, import_body, put_integration
from tests.events.receiver import eventually, receiving

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.runtime import Gateway
from tokenkeep.server import build_asgi_app
from tokenkeep.store.models import WebhookEndpointRow


@pytest.fixture(autouse=True)
def _no_tokenkeep_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENKEEP_") and name != "TOKENKEEP_TEST_PG_DSN":
            monkeypatch.delenv(name)


@pytest.fixture
def clock() -> ManualClock:
    # Near real time: standardwebhooks checks webhook-timestamp against the real clock.
    return ManualClock(time.time())


API_KEY = "tk_webhooks-test-key"


async def _api(db_url: str, tmp_path: Path, clock: ManualClock, **settings: Any) -> Api:
    """A started gateway on ``db_url`` (restartable: the same data dir, keys and API key)."""
    gateway = Gateway(
        load_settings(
            data_dir=tmp_path / "data",
            database_url=db_url,
            secret_key=API_KEY,
            encryption_keys=None,
            scheduler_enabled=False,
            **settings,
        ),
        clock=clock,
    )
    await gateway.start()
    key = API_KEY
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=build_asgi_app(gateway)),
        base_url="http://gateway.test",
        headers={"Authorization": f"Bearer {key}"},
    )
    return Api(gateway, client, key)


@pytest.fixture
async def api(db_url: str, tmp_path: Path, clock: ManualClock) -> AsyncIterator[Api]:
    api = await _api(db_url, tmp_path, clock, allow_insecure_loopback=True)
    try:
        yield api
    finally:
        await api.client.aclose()
        await api.gateway.stop()


async def test_the_secret_is_shown_once_and_stored_encrypted(api: Api) -> None:
    created = await api.client.post(
        "/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["connection.needs_reauth"]},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["secret"]
    assert secret.startswith("whsec_")
    assert body["events"] == ["connection.needs_reauth"]
    assert body["id"].startswith("we_")
    shown = await api.client.get(f"/webhooks/{body['id']}")
    listed = await api.client.get("/webhooks")
    assert shown.status_code == listed.status_code == 200
    assert "secret" not in shown.json()
    assert [w["id"] for w in listed.json()["data"]] == [body["id"]]
    assert secret not in shown.text + listed.text
    async with api.gateway.store.db.read() as session:
        row = (await session.scalars(select(WebhookEndpointRow))).one()
    assert secret not in row.secret_enc
    assert row.secret_enc.startswith("v1.")
    # The stored secret is bound to its row: the ciphertext is no use under another id.
    endpoint = await api.gateway.store.webhooks.get(body["id"], with_secret=True)
    assert endpoint.secret is not None
    assert endpoint.secret.reveal() == secret
    deleted = await api.client.delete(f"/webhooks/{body['id']}")
    assert deleted.status_code == 204
    assert (await api.client.get(f"/webhooks/{body['id']}")).status_code == 404
    assert (await api.client.delete(f"/webhooks/{body['id']}")).json()["error"]["code"] == (
        "not_found"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "https://hooks.example.com/x", "events": ["connection.exploded"]}, "events"),
        ({"url": "https://hooks.example.com/x", "secret": "whsec_x"}, "secret"),
    ],
)
async def test_bad_bodies_are_422_in_our_error_shape(
    api: Api, body: dict[str, Any], field: str
) -> None:
    answer = await api.client.post("/webhooks", json=body)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["message"]


async def test_loopback_and_private_urls_are_refused_unless_allowed(
    db_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    strict = await _api(db_url, tmp_path, clock, allow_insecure_loopback=False)
    try:
        for url in (
            "http://127.0.0.1/",
            "http://localhost:8080/x",
            "http://10.0.0.8/x",
            "http://169.254.169.254/latest",
            "http://[::1]/x",
        ):
            answer = await strict.client.post("/webhooks", json={"url": url})
            assert answer.status_code == 422, url
            assert answer.json()["error"]["code"] == "validation_error"
            message = answer.json()["error"]["message"]
            # An IPv6 literal is refused by the URL shape itself (the document's pattern).
            assert "non-public address" in message or "[::1]" in url, message
        assert (await strict.client.get("/webhooks")).json()["data"] == []
    finally:
        await strict.client.aclose()
        await strict.gateway.stop()
    answer = await (await _allowed(db_url, tmp_path, clock)).client.post(
        "/webhooks", json={"url": "http://127.0.0.1/"}
    )
    assert answer.status_code == 201


async def _allowed(db_url: str, tmp_path: Path, clock: ManualClock) -> Api:
    api = await _api(db_url, tmp_path, clock, allow_insecure_loopback=True)
    _open.append(api)
    return api


_open: list[Api] = []


@pytest.fixture(autouse=True)
async def _close_open() -> AsyncIterator[None]:
    yield
    while _open:
        api = _open.pop()
        await api.client.aclose()
        await api.gateway.stop()


async def test_events_are_listed_delivered_signed_and_redelivered(
    api: Api, clock: ManualClock
) -> None:
    async with receiving() as rx:
        created = (await api.client.post("/webhooks", json={"url": rx.url})).json()
        await put_integration(api.client)
        for name in ("acme", "globex", "initech"):
            answer = await api.client.post("/connections", json=import_body(name))
            assert answer.status_code == 201
        assert api.gateway.webhooks is not None
        api.gateway.webhooks.wake()
        await eventually(lambda: len(rx.got) == 3)

        async def settled() -> bool:  # the outcomes are committed after the answers
            return await api.gateway.store.deliveries.pending_count() == 0

        await eventually(settled)
        for got in rx.got:
            event = Webhook(created["secret"]).verify(got.body, got.headers)
            assert event["type"] == "connection.created"
        page = await api.client.get("/events", params={"limit": 2})
        assert page.status_code == 200
        first = page.json()
        assert [e["connection_id"] for e in first["data"]] == ["initech", "globex"]
        assert first["next_cursor"]
        rest = (await api.client.get("/events", params={"cursor": first["next_cursor"]})).json()
        assert [e["connection_id"] for e in rest["data"]] == ["acme"]
        assert rest["next_cursor"] is None
        acme = rest["data"][0]
        assert acme["status"] == "delivered"
        assert acme["type"] == "connection.created"
        assert acme["data"]["integration"] == "sf"
        assert acme["data"]["status"] == "active"
        (delivery,) = acme["deliveries"]
        assert delivery["endpoint_id"] == created["id"]
        assert (delivery["state"], delivery["attempts"], delivery["last_status_code"]) == (
            "delivered",
            1,
            200,
        )
        filtered = await api.client.get(
            "/events", params={"connection_id": "globex", "type": "connection.created"}
        )
        assert [e["connection_id"] for e in filtered.json()["data"]] == ["globex"]
        assert (await api.client.get("/events", params={"status": "pending"})).json()["data"] == []
        assert (await api.client.get("/events", params={"status": "failed"})).json()["data"] == []
        assert (
            len((await api.client.get("/events", params={"status": "delivered"})).json()["data"])
            == 3
        )
        assert (await api.client.get("/events", params={"status": "lost"})).status_code == 422

        again = await api.client.post(f"/events/{acme['id']}/redeliver")
        assert again.status_code == 202
        assert again.json() == {"event_id": acme["id"], "endpoint_ids": [created["id"]]}
        await eventually(lambda: len(rx.got) == 4)
        await eventually(settled)
        assert rx.got[-1].webhook_id == acme["id"]
        one = await api.client.post(
            f"/events/{acme['id']}/redeliver", params={"endpoint_id": created["id"]}
        )
        assert one.status_code == 202
        await eventually(lambda: len(rx.got) == 5)
        await eventually(settled)

    assert (await api.client.post("/events/evt_nope/redeliver")).status_code == 404
    unknown_endpoint = await api.client.post(
        f"/events/{acme['id']}/redeliver", params={"endpoint_id": "we_nope"}
    )
    assert unknown_endpoint.status_code == 404
    assert unknown_endpoint.json()["error"]["code"] == "not_found"
    assert (await api.client.get("/events", params={"cursor": "x"})).status_code == 422
    entries = await api.gateway.store.operations.list(kind="webhook")
    assert len(entries) == 5
    assert {e.outcome for e in entries} == {"delivered"}
    assert set(entries[0].detail) >= {"event_id", "endpoint_id", "attempt", "status_code"}
    assert created["secret"] not in str([e.detail for e in entries])


async def test_the_settings_endpoint_is_kept_in_sync_and_cannot_be_deleted(
    db_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    from tokenkeep.events import new_webhook_secret

    secret = new_webhook_secret().reveal()
    async with receiving() as rx:
        api = await _api(
            db_url,
            tmp_path,
            clock,
            allow_insecure_loopback=True,
            webhook_url=rx.url,
            webhook_secret=secret,
        )
        _open.append(api)
        listed = (await api.client.get("/webhooks")).json()["data"]
        assert [(w["id"], w["url"], w["source"], w["events"]) for w in listed] == [
            ("settings", rx.url, "settings", None)
        ]
        refused = await api.client.delete("/webhooks/settings")
        assert refused.status_code == 409
        await put_integration(api.client)
        await api.client.post("/connections", json=import_body("acme"))
        assert api.gateway.webhooks is not None
        api.gateway.webhooks.wake()
        await eventually(lambda: len(rx.got) == 1)
        assert Webhook(secret).verify(rx.got[0].body, rx.got[0].headers)["type"] == (
            "connection.created"
        )
    await api.gateway.stop()
    # Restarted without TOKENKEEP_WEBHOOK_URL: the endpoint is gone.
    again = await _api(db_url, tmp_path, clock, allow_insecure_loopback=True)
    _open.append(again)
    assert (await again.client.get("/webhooks")).json()["data"] == []
