"""Every failure of the control API is ``{"error": {"code", "message"}}`` with the right status."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import structlog
from tests.api.api_helpers import Api, import_body, put_integration

from tokenkeep.observability.logging import configure_logging
from tokenkeep.server import build_asgi_app


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return str(body["error"]["message"])


async def test_malformed_json_is_400(api: Api) -> None:
    await put_integration(api.client)
    for raw in (b"{not json", b'{"integration": "sf",}', b"\xff\xfe"):
        response = await api.client.post(
            "/connections", content=raw, headers={"Content-Type": "application/json"}
        )
        assert_error(response, 400, "invalid_json")


async def test_unknown_and_missing_fields_name_the_field(api: Api) -> None:
    await put_integration(api.client)
    unknown = await api.client.post("/connections", json=import_body(colour="blue"))
    assert "colour" in assert_error(unknown, 422, "validation_error")
    nested = import_body()
    nested["credentials"]["expires_in"] = 7200  # type: ignore[index]
    message = assert_error(
        await api.client.post("/connections", json=nested), 422, "validation_error"
    )
    assert "credentials.expires_in" in message
    missing = import_body()
    del missing["credentials"]["access_token"]  # type: ignore[attr-defined]
    message = assert_error(
        await api.client.post("/connections", json=missing), 422, "validation_error"
    )
    assert "credentials.access_token" in message
    wrong_type = await api.client.post("/connections", json=["not", "an", "object"])
    assert_error(wrong_type, 422, "validation_error")
    bad_id = await api.client.post("/connections", json=import_body("has spaces/and/slashes"))
    assert "connection_id" in assert_error(bad_id, 422, "validation_error")


async def test_validation_errors_never_echo_the_input(api: Api) -> None:
    await put_integration(api.client)
    body = import_body(
        instance_url="http://sneaky.example", access_token="00D5g000004ABCD!AQ0Canary"
    )
    body["connection_id"] = "bad id 00D5g000004ABCD!AQ0Canary"
    response = await api.client.post("/connections", json=body)
    assert response.status_code == 422
    assert "Canary" not in response.text


async def test_unknown_route_is_404_and_wrong_method_is_405(api: Api) -> None:
    assert_error(await api.client.get("/nowhere"), 404, "not_found")
    assert_error(await api.client.patch("/integrations/sf", json={}), 405, "method_not_allowed")
    assert_error(await api.client.get("/connections/acme"), 404, "not_found")


async def test_oversized_body_is_413_by_content_length(api: Api) -> None:
    await put_integration(api.client)
    limit = api.gateway.settings.max_body_bytes
    body = import_body(metadata={"blob": "x" * (limit + 10)})
    response = await api.client.post("/connections", json=body)
    assert "limit" in assert_error(response, 413, "payload_too_large")
    assert (await api.client.get("/connections")).json()["data"] == []


async def test_oversized_streamed_body_is_413_without_content_length(api: Api) -> None:
    await put_integration(api.client)
    limit = api.gateway.settings.max_body_bytes
    payload = json.dumps(import_body(metadata={"blob": "x" * (limit + 10)})).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    response = await api.client.post(
        "/connections", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")
    assert (await api.client.get("/connections")).json()["data"] == []


async def test_a_body_just_under_the_limit_is_accepted(api: Api) -> None:
    await put_integration(api.client)
    limit = api.gateway.settings.max_body_bytes
    body = import_body(metadata={"blob": ""})
    room = limit - len(json.dumps(body).encode()) - 100
    body["metadata"] = {"blob": "x" * room}
    assert (await api.client.post("/connections", json=body)).status_code == 201


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    # The test's own HTTP client logs its request URLs; only the gateway's lines matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    yield stream
    logging.getLogger("httpx").setLevel(logging.NOTSET)
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []


async def test_unexpected_exception_is_500_without_details_and_logged(
    api: Api, captured_logs: io.StringIO
) -> None:
    app = build_asgi_app(api.gateway)
    control = app.control

    @control.get("/boom")  # type: ignore[attr-defined]
    async def boom() -> None:
        raise RuntimeError("internal detail: /srv/secret/path")

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=api.auth
    ) as client:
        response = await client.get("/boom")
    message = assert_error(response, 500, "internal_error")
    assert "secret/path" not in response.text
    assert "RuntimeError" not in message
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    assert any(
        line["event"] == "unhandled error" and "RuntimeError" in line.get("exception", "")
        for line in lines
    )
    assert any(line["event"] == "request" and line["status"] == 500 for line in lines)


async def test_one_request_log_line_per_request_without_headers_or_bodies(
    api: Api, captured_logs: io.StringIO
) -> None:
    await put_integration(api.client)
    captured_logs.truncate(0)
    captured_logs.seek(0)
    response = await api.client.post(
        "/connections?debug=QUERYVALUE", json=import_body(metadata={"note": "BODYVALUE"})
    )
    assert response.status_code == 201
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    requests = [line for line in lines if line["event"] == "request"]
    assert len(requests) == 1
    line = requests[0]
    assert line["method"] == "POST"
    assert line["path"] == "/connections"
    assert line["status"] == 201
    assert isinstance(line["duration_ms"], int | float)
    text = captured_logs.getvalue()
    for leaked in ("QUERYVALUE", "BODYVALUE", api.api_key, "Bearer"):
        assert leaked not in text


async def test_values_longer_than_their_columns_are_422_not_500(api: Api) -> None:
    await put_integration(api.client)
    long_host = "https://" + "a" * 500 + ".my.salesforce.com"
    cases = [
        ("POST", "/connections", import_body("c" * 101)),
        ("POST", "/connections", import_body(instance_url=long_host)),
        ("POST", "/connections", import_body(identity_url=long_host)),
        ("PUT", "/integrations/sf", {"client_id": "x" * 501}),
        ("PUT", "/integrations/sf", {"client_id": "x", "login_url": long_host}),
        ("PUT", "/integrations/sf", {"client_id": "x", "provider": "p" * 51}),
        ("PUT", "/integrations/" + "k" * 101, {"client_id": "x"}),
    ]
    for method, path, body in cases:
        response = await api.client.request(method, path, json=body)
        assert_error(response, 422, "validation_error")
    assert (await api.client.get("/connections")).json()["data"] == []
