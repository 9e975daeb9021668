"""``/integrations``: create, replace, show, list, delete; secrets never come back."""

from __future__ import annotations

from tests.api.api_helpers import Api, import_body, put_integration

SECRET = "client-secret-value-7f3a"
PRIVATE_KEY = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
)


async def test_put_creates_then_replaces(api: Api) -> None:
    body = {"client_id": "3MVG9abc", "client_secret": SECRET, "scopes": ["api", "refresh_token"]}
    created = await api.client.put("/integrations/sales", json=body)
    assert created.status_code == 201
    data = created.json()
    assert data["key"] == "sales"
    assert data["provider"] == "salesforce"
    assert data["login_url"] == "https://login.salesforce.com"
    assert data["auth_mode"] == "oauth2"
    assert data["scopes"] == ["api", "refresh_token"]
    assert data["has_client_secret"] is True
    assert data["has_private_key"] is False
    assert SECRET not in created.text

    replaced = await api.client.put(
        "/integrations/sales",
        json={"client_id": "3MVG9xyz", "login_url": "https://test.salesforce.com"},
    )
    assert replaced.status_code == 200
    assert replaced.json()["client_id"] == "3MVG9xyz"
    assert replaced.json()["login_url"] == "https://test.salesforce.com"
    # Leaving the secret out keeps it; sending null removes it.
    assert replaced.json()["has_client_secret"] is True
    cleared = await api.client.put(
        "/integrations/sales", json={"client_id": "3MVG9xyz", "client_secret": None}
    )
    assert cleared.json()["has_client_secret"] is False


async def test_jwt_bearer_private_key_is_never_shown(api: Api) -> None:
    response = await api.client.put(
        "/integrations/jwt",
        json={
            "client_id": "3MVG9jwt",
            "auth_mode": "jwt_bearer",
            "private_key": PRIVATE_KEY,
            "username": "integration@acme.example",
            "session_timeout_seconds": 900,
        },
    )
    assert response.status_code == 201
    assert response.json()["has_private_key"] is True
    assert response.json()["session_timeout_seconds"] == 900
    for call in (api.client.get("/integrations/jwt"), api.client.get("/integrations")):
        text = (await call).text
        assert "BEGIN PRIVATE KEY" not in text
        assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" not in text


async def test_get_list_delete(api: Api) -> None:
    await put_integration(api.client, "b-app")
    await put_integration(api.client, "a-app")
    listed = await api.client.get("/integrations")
    assert [i["key"] for i in listed.json()["data"]] == ["a-app", "b-app"]
    assert (await api.client.get("/integrations/a-app")).json()["client_id"] == "client-1"
    deleted = await api.client.delete("/integrations/a-app")
    assert deleted.status_code == 204
    missing = await api.client.get("/integrations/a-app")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    again = await api.client.delete("/integrations/a-app")
    assert again.status_code == 404


async def test_delete_while_connections_use_it_is_409(api: Api) -> None:
    await put_integration(api.client, "sf")
    assert (await api.client.post("/connections", json=import_body())).status_code == 201
    response = await api.client.delete("/integrations/sf")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert (await api.client.get("/integrations/sf")).status_code == 200


async def test_invalid_integrations_are_422(api: Api) -> None:
    cases = [
        ({"client_secret": "x"}, "client_id"),
        ({"client_id": "x", "auth_mode": "magic"}, "auth_mode"),
        ({"client_id": "x", "colour": "red"}, "colour"),
        ({"client_id": "x", "login_url": "http://login.example.com"}, "login_url"),
        ({"client_id": "x", "login_url": "not a url"}, "login_url"),
        ({"client_id": "x", "session_timeout_seconds": 5}, "session_timeout_seconds"),
    ]
    for body, field in cases:
        response = await api.client.put("/integrations/sf", json=body)
        assert response.status_code == 422, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert field in error["message"], (body, error)
    bad_key = await api.client.put("/integrations/bad%20key", json={"client_id": "x"})
    assert bad_key.status_code == 422
    assert (await api.client.get("/integrations")).json() == {"data": []}
