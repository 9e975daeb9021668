"""``/connections``: import, list with filters and cursors, show, delete; no token ever shown."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select
from tests.api.api_helpers import Api, import_body, put_integration, start_api

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.server import build_asgi_app
from tokenkeep.store.models import OutboxRow

ACCESS = "00D5g000004ABCD!AQ0AccessTokenValue"
REFRESH = "5Aep861RefreshTokenValue"


async def test_import_returns_201_without_secrets(api: Api) -> None:
    await put_integration(api.client)
    body = import_body("acme", metadata={"tenant": "t-1"})
    body["credentials"]["issued_at"] = "1767225600000"  # type: ignore[index]
    response = await api.client.post("/connections", json=body)
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["id"] == "acme"
    assert data["integration"] == "sf"
    assert data["status"] == "active"
    assert data["status_reason"] is None
    assert data["org_id"] == "00D5g000004ABCDEAA"
    assert data["user_id"] == "0055g000009XYZWAAA"
    assert data["instance_url"] == "https://acme.my.salesforce.com"
    assert data["has_refresh_token"] is True
    assert data["refresh_token_fingerprint"].startswith("sha256:")
    assert data["issued_at"].startswith("2026-01-01T00:00:00")
    assert data["metadata"] == {"tenant": "t-1"}
    assert "expires_at" in data
    assert ACCESS not in response.text
    assert REFRESH not in response.text
    assert "access_token" not in data
    assert "refresh_token" not in data

    shown = await api.client.get("/connections/acme")
    assert shown.status_code == 200
    assert shown.json() == data


async def test_import_generates_an_id_and_stores_the_tokens(api: Api) -> None:
    await put_integration(api.client)
    body = import_body(None, refresh_token=None, identity_url=None)
    response = await api.client.post("/connections", json=body)
    assert response.status_code == 201
    data = response.json()
    assert data["id"]
    assert data["has_refresh_token"] is False
    assert data["refresh_token_fingerprint"] is None
    assert data["org_id"] is None
    stored = await api.gateway.store.connections.get(data["id"], with_credentials=True)
    assert stored.credentials is not None
    assert stored.credentials.access_token.reveal() == ACCESS


async def test_unknown_integration_is_404(api: Api) -> None:
    response = await api.client.post("/connections", json=import_body(integration="nope"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "nope" in response.json()["error"]["message"]


async def test_duplicate_connection_id_is_409_and_keeps_the_first(api: Api) -> None:
    await put_integration(api.client)
    assert (await api.client.post("/connections", json=import_body("dup"))).status_code == 201
    second = await api.client.post(
        "/connections",
        json=import_body(
            "dup",
            access_token="00D5g000004ABCD!AQ0SecondToken",
            instance_url="https://other.my.salesforce.com",
        ),
    )
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "conflict"
    assert "SecondToken" not in second.text
    kept = await api.gateway.store.connections.get("dup", with_credentials=True)
    assert kept.instance_url == "https://acme.my.salesforce.com"
    assert kept.credentials is not None
    assert kept.credentials.access_token.reveal() == ACCESS


async def test_non_https_instance_url_is_422(api: Api) -> None:
    await put_integration(api.client)
    for url in (
        "http://acme.my.salesforce.com",
        "http://127.0.0.1:8501",
        "ftp://x.example",
        "acme",
    ):
        response = await api.client.post("/connections", json=import_body("x", instance_url=url))
        assert response.status_code == 422, (url, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert "instance_url" in error["message"]
    assert (await api.client.get("/connections")).json()["data"] == []


async def test_loopback_http_is_accepted_only_with_the_setting(
    db_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    settings = load_settings(
        data_dir=tmp_path / "loop",
        database_url=db_url,
        secret_key=None,
        encryption_keys=None,
        allow_insecure_loopback=True,
    )
    gateway, key = await start_api(settings, clock)
    transport = httpx.ASGITransport(app=build_asgi_app(gateway))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"Authorization": f"Bearer {key}"}
        ) as client:
            await put_integration(client)
            ok = await client.post(
                "/connections", json=import_body("local", instance_url="http://127.0.0.1:8501")
            )
            assert ok.status_code == 201, ok.text
            remote = await client.post(
                "/connections", json=import_body("remote", instance_url="http://10.1.2.3")
            )
            assert remote.status_code == 422
    finally:
        await gateway.stop()


async def test_list_filters_and_paginates(api: Api, clock: ManualClock) -> None:
    await put_integration(api.client, "sf")
    await put_integration(api.client, "sandbox")
    other_org = "https://test.salesforce.com/id/00D5g000009OTHERAA/0055g000009XYZWAAA"
    for i in range(5):
        clock.advance(1)
        body = import_body(f"c{i}", integration="sf" if i < 3 else "sandbox")
        if i == 4:
            body["credentials"]["id"] = other_org  # type: ignore[index]
        assert (await api.client.post("/connections", json=body)).status_code == 201
    await api.gateway.store.connections.set_status("c1", "needs_reauth", reason="revoked")

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.client.get("/connections", params=params)).json()
        assert len(page["data"]) <= 2
        seen += [c["id"] for c in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["c0", "c1", "c2", "c3", "c4"]

    async def ids(**params: str) -> list[str]:
        response = await api.client.get("/connections", params=params)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["data"]]

    assert await ids(integration="sandbox") == ["c3", "c4"]
    assert await ids(status="needs_reauth") == ["c1"]
    assert await ids(org_id="00D5g000009OTHERAA") == ["c4"]
    assert await ids(integration="sf", status="active") == ["c0", "c2"]
    shown = (await api.client.get("/connections/c1")).json()
    assert (shown["status"], shown["status_reason"]) == ("needs_reauth", "revoked")


async def test_bad_list_parameters_are_422(api: Api) -> None:
    for params in (
        {"status": "sleeping"},
        {"limit": "0"},
        {"limit": "many"},
        {"cursor": "garbage!"},
    ):
        response = await api.client.get("/connections", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"]["code"] == "validation_error"


async def test_delete_removes_the_connection(api: Api) -> None:
    await put_integration(api.client)
    await api.client.post("/connections", json=import_body("gone"))
    response = await api.client.delete("/connections/gone")
    assert response.status_code == 204
    assert (await api.client.get("/connections/gone")).status_code == 404
    again = await api.client.delete("/connections/gone")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "not_found"


async def test_identity_url_is_parsed_only_when_it_is_one(api: Api) -> None:
    await put_integration(api.client)
    body = import_body("odd", identity_url="https://login.salesforce.com/services/oauth2/userinfo")
    response = await api.client.post("/connections", json=body)
    assert response.status_code == 201
    assert response.json()["org_id"] is None
    assert response.json()["user_id"] is None


async def _outbox(api: Api) -> list[tuple[str, str | None, dict[str, object]]]:
    async with api.gateway.store.db.read() as session:
        rows = (await session.scalars(select(OutboxRow).order_by(OutboxRow.created_at))).all()
    return [(r.event_type, r.connection_id, dict(r.payload)) for r in rows]


async def test_import_writes_connection_created_and_a_refused_import_writes_none(
    api: Api,
) -> None:
    await put_integration(api.client)
    created = await api.client.post("/connections", json=import_body("acme", metadata={"t": 1}))
    assert created.status_code == 201
    events = await _outbox(api)
    assert events == [
        (
            "connection.created",
            "acme",
            {
                "connection_id": "acme",
                "org_id": "00D5g000004ABCDEAA",
                "integration": "sf",
                "metadata": {"t": 1},
                # The standard keys every event carries (store/operations.py fills them).
                "status": "active",
                "reason": None,
                "fix": None,
            },
        )
    ]
    duplicate = await api.client.post("/connections", json=import_body("acme"))
    assert duplicate.status_code == 409
    assert await _outbox(api) == events  # the refused import wrote no event
