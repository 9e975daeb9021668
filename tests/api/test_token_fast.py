"""``GET /connections/{id}/token``'s fast path (api/token_fast.py) answers exactly as the
FastAPI route does: compared side by side on a real gateway over HTTP, the route reached
by adding a query parameter it ignores (which the fast path hands on)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tokenkeep.api.token_fast import _plain_request
from tokenkeep.testing import GatewayUnderTest

pytestmark = pytest.mark.tokenkeep_gateway(orgs=1, seed=5)

ROUTE = "via=fastapi"  # an unknown query parameter: FastAPI ignores it, the fast path passes


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _both(http: httpx.AsyncClient, path: str, **kwargs: object) -> list[httpx.Response]:
    sep = "&" if "?" in path else "?"
    return [await http.get(path, **kwargs), await http.get(f"{path}{sep}{ROUTE}", **kwargs)]  # type: ignore[arg-type]


def _same(fast: httpx.Response, route: httpx.Response) -> None:
    assert (fast.status_code, fast.json()) == (route.status_code, route.json())
    for header in ("content-type", "cache-control", "www-authenticate"):
        assert fast.headers.get(header) == route.headers.get(header), header


async def test_a_token_is_answered_as_the_route_answers_it(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("f1")
    async with httpx.AsyncClient(base_url=gw.base_url, headers=_auth(gw.api_key.reveal())) as http:
        fast, route = await _both(http, "/connections/f1/token")
        ttl_fast, ttl_route = await _both(http, "/connections/f1/token?min_ttl=120.5")
    _same(fast, route)
    _same(ttl_fast, ttl_route)
    assert fast.status_code == 200
    assert fast.headers["cache-control"] == "no-store"
    assert fast.json()["connection_id"] == "f1"
    assert gw.grants() == 0
    stored = await gw.gateway.store.connections.get("f1")
    assert stored.last_used_from_address == "127.0.0.1"


async def test_errors_are_answered_as_the_route_answers_them(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("f2")
    key = gw.api_key.reveal()
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        cases = {
            "no key": await _both(http, "/connections/f2/token"),
            "not bearer": await _both(
                http, "/connections/f2/token", headers={"Authorization": f"Basic {key}"}
            ),
            "wrong key": await _both(http, "/connections/f2/token", headers=_auth("tk_nope")),
            "unknown connection": await _both(http, "/connections/nope/token", headers=_auth(key)),
            "min_ttl too long": await _both(
                http, "/connections/f2/token?min_ttl=3601", headers=_auth(key)
            ),
            "min_ttl not a number": await _both(
                http, "/connections/f2/token?min_ttl=soon", headers=_auth(key)
            ),
            "bad id": await _both(http, "/connections/-x/token", headers=_auth(key)),
        }
        user = gw.emulator.orgs[0].users[0]
        gw.emulator.admin.set_password(user.username, "a-new-password-2")
        assert (await http.post("/connections/f2/refresh", headers=_auth(key))).status_code == 409
        cases["needs_reauth"] = await _both(http, "/connections/f2/token", headers=_auth(key))
    statuses = {name: fast.status_code for name, (fast, _route) in cases.items()}
    assert statuses == {
        "no key": 401,
        "not bearer": 401,
        "wrong key": 401,
        "unknown connection": 404,
        "min_ttl too long": 422,
        "min_ttl not a number": 422,
        "bad id": 422,
        "needs_reauth": 409,
    }
    for name, (fast, route) in cases.items():
        assert fast.json()["error"]["code"], name
        _same(fast, route)


async def test_a_revoked_key_is_refused_on_the_fast_path(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    await gw.connect("f3")
    created = await gw.gateway.store.api_keys.create("direct-mode client")
    headers = _auth(created.secret.reveal())
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers) as http:
        assert (await http.get("/connections/f3/token")).status_code == 200  # now cached
        await gw.gateway.store.api_keys.revoke(created.key.id)
        refused = None
        for _ in range(200):  # bounded: the recheck interval is 0.5 s
            answer = await http.get("/connections/f3/token")
            if answer.status_code == 401:
                refused = answer
                break
            await asyncio.sleep(0.01)
    assert refused is not None
    assert refused.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("path", "query", "headers", "taken"),
    [
        ("/connections/c1/token", b"", [], ("c1", 60.0)),
        ("/connections/c1/token", b"min_ttl=0", [], ("c1", 0.0)),
        ("/connections/c1/token", b"min_ttl=3600", [], ("c1", 3600.0)),
        ("/connections/a.b~c-d_e/token", b"min_ttl=12.5", [], ("a.b~c-d_e", 12.5)),
        ("/connections/c1/token", b"min_ttl=3600.5", [], None),
        ("/connections/c1/token", b"min_ttl=1e3", [], None),
        ("/connections/c1/token", b"min_ttl=-1", [], None),
        ("/connections/c1/token", b"min_ttl=60&other=1", [], None),
        ("/connections/-c1/token", b"", [], None),
        ("/connections/c1/x/token", b"", [], None),
        ("/connections/" + "a" * 101 + "/token", b"", [], None),
        ("/connections/c1/token", b"", [(b"content-length", b"2")], None),
        ("/connections/c1/token", b"", [(b"transfer-encoding", b"chunked")], None),
    ],
)
def test_what_the_fast_path_takes_and_what_it_hands_on(
    path: str, query: bytes, headers: list[tuple[bytes, bytes]], taken: tuple[str, float] | None
) -> None:
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query}
    assert _plain_request({**scope, "headers": headers}) == taken
