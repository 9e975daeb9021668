"""``GET /logs`` through the SDK, on a real gateway in front of the emulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tokenkeep.client import AsyncClient
from tokenkeep.errors import UnauthorizedError, ValidationError
from tokenkeep.testing import GatewayUnderTest


async def test_connect_and_refresh_appear_newest_first_with_filters(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    acme = await gw.connect("acme")
    await gw.connect("globex", org=1)
    async with gw.async_client() as tk:
        await tk.refresh_connection("acme")
        entries = await tk.logs()
        mine = await tk.logs(connection_id="acme")
        refreshes = await tk.logs(kind="refresh")
        by_org = await tk.logs(org_id=acme.org_id)
        one = await tk.logs(limit=1)
        later = await tk.logs(since=datetime.now(UTC) + timedelta(hours=1))
        earlier = await tk.logs(since=(datetime.now(UTC) - timedelta(hours=1)).isoformat())

    assert [(e["kind"], e["connection_id"]) for e in mine] == [
        ("refresh", "acme"),
        ("connect", "acme"),
    ]
    assert mine[0]["outcome"] == "ok"
    assert mine[0]["org_id"] == acme.org_id
    assert mine[0]["at"] >= mine[1]["at"]
    assert {e["connection_id"] for e in entries} == {"acme", "globex"}
    assert entries[0]["kind"] == "refresh"  # the newest
    assert [(e["kind"], e["connection_id"]) for e in refreshes] == [("refresh", "acme")]
    assert {e["connection_id"] for e in by_org} == {"acme"}
    assert one == entries[:1]
    assert later == []
    assert earlier == entries


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"since": "yesterday"}, {"limit": "many"}],
)
async def test_bad_parameters_are_422(
    tokenkeep_gateway: GatewayUnderTest, params: dict[str, object]
) -> None:
    async with tokenkeep_gateway.async_client() as tk:
        with pytest.raises(ValidationError) as info:
            await tk.logs(**params)  # type: ignore[arg-type]
    assert info.value.status_code == 422


async def test_the_limit_is_bounded_and_an_api_key_is_required(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("acme")
    async with gw.async_client() as tk:
        assert len(await tk.logs(limit=1000)) == 1
    async with AsyncClient(gw.base_url, "tk_wrong") as tk:
        with pytest.raises(UnauthorizedError):
            await tk.logs()
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        bare = await http.get("/logs")
    assert bare.status_code == 401
    assert bare.json()["error"]["code"] == "unauthorized"


async def _get_logs(gw: GatewayUnderTest, **params: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30) as http:
        return await http.get("/logs", params=params)  # type: ignore[arg-type]


async def test_cursor_pages_cover_every_entry_once_newest_first(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    now = gw.gateway.clock.now()
    await gw.gateway.store.operations.insert_many(
        [
            {
                "at": now - timedelta(seconds=i // 3),
                "kind": "call",
                "outcome": "ok",
                "org_id": "00Dx",
                "detail": {"i": i},
            }
            for i in range(25)
        ]
    )
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        params: dict[str, object] = {"org_id": "00Dx", "limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = (await _get_logs(gw, **params)).json()
        seen.extend(e["detail"]["i"] for e in body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == list(range(25))
    assert len(seen) == 25
    assert seen[0] in (0, 1, 2)  # the newest second first


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"cursor": "%00"},
        {"status": "abc"},
        {"status": "601"},
        {"kind": "\x00"},
        {"connection_id": "\x00"},
        {"org_id": "a\x00b"},
        {"since": "9999-12-31T23:59:59-14:00"},
        {"until": "0001-01-01T00:00:00+14:00"},
    ],
)
async def test_bad_filters_are_422_in_our_error_shape(
    tokenkeep_gateway: GatewayUnderTest, params: dict[str, object]
) -> None:
    answer = await _get_logs(tokenkeep_gateway, **params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_error"
