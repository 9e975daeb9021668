"""Every control route but health needs ``Authorization: Bearer <api key>``."""

from __future__ import annotations

from tests.api.api_helpers import Api

PROTECTED = [
    ("GET", "/integrations"),
    ("GET", "/integrations/sf"),
    ("PUT", "/integrations/sf"),
    ("DELETE", "/integrations/sf"),
    ("GET", "/connections"),
    ("POST", "/connections"),
    ("GET", "/connections/acme"),
    ("DELETE", "/connections/acme"),
    ("GET", "/openapi.json"),
]


BAD_HEADERS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic dXNlcjpwYXNz",
    "Bearer tk_not-a-real-key-000000000",
]


async def test_missing_or_wrong_key_is_401_in_the_error_shape(api: Api) -> None:
    api.client.headers.pop("Authorization", None)
    for header in BAD_HEADERS:
        headers = {} if header is None else {"Authorization": header}
        for method, path in PROTECTED:
            response = await api.client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (header, method, path, response.text)
            body = response.json()
            assert body["error"]["code"] == "unauthorized"
            assert body["error"]["message"]
            assert response.headers["www-authenticate"] == "Bearer"


async def test_the_bootstrap_key_works(api: Api) -> None:
    response = await api.client.get("/integrations", headers=api.auth)
    assert response.status_code == 200
    assert response.json() == {"data": []}


async def test_a_revoked_key_stops_working(api: Api) -> None:
    created = await api.gateway.store.api_keys.create("ci")
    headers = {"Authorization": f"Bearer {created.secret.reveal()}"}
    assert (await api.client.get("/connections", headers=headers)).status_code == 200
    await api.gateway.store.api_keys.revoke(created.key.id)
    response = await api.client.get("/connections", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_openapi_lists_the_routes(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/integrations/{key}",
        "/integrations",
        "/connections",
        "/connections/{connection_id}",
        "/healthz",
        "/readyz",
    ):
        assert path in paths
