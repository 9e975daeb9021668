"""Authentication: every route refuses a missing, malformed, wrong, revoked or deleted key.

Issue 13, suite item 14. The routes are enumerated from the app itself (new routes are
covered automatically); the public ones are an explicit list, so a route that becomes
public by mistake fails here. Also: the key check's mechanism (hashed lookup, constant-time
compare), and connect-flow attacks not covered by ``tests/api/test_connect.py`` (replay,
PKCE mismatch, unknown state, expired link are there): a code from one connect session
used with another session's state (mix-up), and a state that expired between the
authorize redirect and the callback. Dashboard cookie flags and CSRF:
``tests/dashboard/test_session.py``; open redirects: ``tests/security/test_return_url.py``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import httpx
from sqlalchemy import select
from tests.api.api_helpers import Api
from tests.api.test_connect import Flow, flow  # noqa: F401  (the fixture, reused)

from tokenkeep.api.dashboard.session import PREFIX as DASHBOARD
from tokenkeep.proxy import auth as proxy_auth
from tokenkeep.store import api_keys
from tokenkeep.store.models import ApiKeyRow, ConnectionRow

#: Routes that need no API key, each for a documented reason.
PUBLIC = {
    ("GET", "/healthz"),  # liveness probe
    ("GET", "/readyz"),  # readiness probe
    ("GET", "/metrics"),  # Prometheus: counts only (no secret: tests/test_canary*.py)
    ("GET", "/connect/{token:connect_token}"),  # the end user's browser opens the link
    ("GET", "/oauth/callback"),  # Salesforce sends the browser back here
}
#: The dashboard logs in with its own session cookie; its open pages.
DASHBOARD_OPEN = {("GET", "/login"), ("POST", "/login"), ("GET", "/static/{name}")}

_PARAMS = {
    "key": "sf",
    "connection_id": "acme",
    "org_id": "00D000000000001EAA",
    "endpoint_id": "wh_0000",
    "event_id": "evt_0000",
    "name": "dashboard.css",
    "token": "A" * 43,
}
PROXY_CALLS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("GET", "/c/acme/services/data/v60.0/limits", {}),
    ("POST", "/c/acme/services/data/v60.0/sobjects/Account", {}),
    ("GET", "/proxy/services/data/v60.0/limits", {"Connection-Id": "acme"}),
)


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every route, through included routers."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from _routes(included.routes, prefix + getattr(context, "prefix", ""))
            continue
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                yield method, prefix + route.path


def _concrete(template: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: _PARAMS[m.group(1)], template)


def _all_routes(api: Api) -> set[tuple[str, str]]:
    app = api.client._transport.app  # type: ignore[attr-defined]  # the GatewayApp
    routes = set(_routes(app.control.routes))
    assert len(routes) > 40, routes  # the walk found the included routers
    return routes


async def _bad_keys(api: Api) -> dict[str, str | None]:
    keys = api.gateway.store.api_keys
    revoked = await keys.create("revoked")
    await keys.revoke(revoked.key.id)
    deleted = await keys.create("deleted")
    await keys.delete(deleted.key.id)
    return {
        "none": None,
        "empty bearer": "Bearer ",
        "malformed": "Basic dXNlcjpwYXNz",
        "not a key": "Bearer not-a-key",
        "wrong": "Bearer tk_" + "x" * 43,
        "near miss": "Bearer " + api.api_key[:-1] + ("a" if api.api_key[-1] != "a" else "b"),
        "revoked": "Bearer " + revoked.secret.reveal(),
        "deleted": "Bearer " + deleted.secret.reveal(),
    }


def _headers(authorization: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    # The client's default Authorization is the good key: always override it.
    return {"Authorization": authorization or "", **(extra or {})}


async def _call(api: Api, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body: dict[str, Any] | None = {} if method in ("POST", "PUT", "PATCH") else None
    return await api.client.request(method, path, json=body, headers=headers)


def _assert_unauthorized(answer: httpx.Response, what: str) -> None:
    assert answer.status_code == 401, (what, answer.status_code, answer.text)
    error = answer.json()["error"]
    assert error["code"] == "unauthorized", what
    assert isinstance(error["message"], str), what
    assert error["message"], what


async def test_the_public_routes_are_exactly_the_documented_ones(api: Api) -> None:
    routes = _all_routes(api)
    dashboard = {(m, p) for m, p in routes if p.startswith(DASHBOARD)}
    assert routes >= PUBLIC
    assert {(m, DASHBOARD + p) for m, p in DASHBOARD_OPEN} <= dashboard
    for method, template in sorted(routes - dashboard - PUBLIC):
        answer = await _call(api, method, _concrete(template), _headers(None))
        _assert_unauthorized(answer, f"{method} {template}")
    for method, template in sorted(PUBLIC):
        answer = await _call(api, method, _concrete(template), _headers(None))
        assert answer.status_code != 401, (method, template)


async def test_every_control_and_proxy_route_refuses_every_bad_key(api: Api) -> None:
    routes = _all_routes(api)
    guarded = sorted((m, p) for m, p in routes - PUBLIC if not p.startswith(DASHBOARD))
    for name, authorization in (await _bad_keys(api)).items():
        for method, template in guarded:
            answer = await _call(api, method, _concrete(template), _headers(authorization))
            _assert_unauthorized(answer, f"{name}: {method} {template}")
        for method, path, extra in PROXY_CALLS:
            answer = await _call(api, method, path, _headers(authorization, extra))
            _assert_unauthorized(answer, f"{name}: proxy {method} {path}")
    # The good key still works: the 401s above came from the key, not from the route.
    assert (await api.client.get("/connections")).status_code == 200


async def test_the_dashboard_never_serves_a_stranger(api: Api) -> None:
    routes = _all_routes(api)
    for method, template in sorted(routes):
        inner = template.removeprefix(DASHBOARD)
        if not template.startswith(DASHBOARD) or (method, inner) in DASHBOARD_OPEN:
            continue
        # With the API key header too: it is not a dashboard login.
        for authorization in (None, "Bearer " + api.api_key):
            answer = await _call(api, method, _concrete(template), _headers(authorization))
            assert answer.status_code in (303, 401, 403), (method, template, answer.text)
            if answer.status_code == 303:
                assert answer.headers["location"].startswith(DASHBOARD + "/login")


async def test_keys_are_found_by_hash_and_compared_in_constant_time(api: Api) -> None:
    """The mechanism, not a timing measurement: no plaintext stored, no ``==`` on secrets."""
    async with api.gateway.store.db.read() as session:
        rows = list(await session.scalars(select(ApiKeyRow)))
    assert rows
    for row in rows:
        assert api.api_key not in (row.key_hash, row.prefix, row.name, row.id)
        assert re.fullmatch(r"[0-9a-f]{64}", row.key_hash)
    assert any(row.key_hash == api_keys.hash_api_key(api.api_key) for row in rows)
    verify = inspect.getsource(api_keys.ApiKeyRepository.verify)
    assert "ApiKeyRow.key_hash == digest" in verify  # an indexed lookup by hash
    assert "hmac.compare_digest(row.key_hash, digest)" in verify
    # The proxy's positive cache is keyed by the SHA-256 of the key, never by the key.
    cache = inspect.getsource(proxy_auth.CallbackKeyCheck)
    assert "hashlib.sha256(key.encode()).digest()" in cache
    assert "self._cache[key]" not in cache
    assert "self._cache.get(key)" not in cache


async def test_a_code_from_another_connect_session_is_refused(flow: Flow) -> None:  # noqa: F811
    """Mix-up: the user's code arrives with an attacker's state (another session)."""
    victim = await flow.authorize_params(await flow.start(connection_id="victim"))
    attacker = await flow.authorize_params(await flow.start(connection_id="attacker"))
    victim_query = flow.consent(victim, flow.emu.orgs[0].users[0].username)
    mixed = {"state": attacker["state"], "code": victim_query["code"]}
    answer = await flow.callback(mixed)
    assert answer.status_code == 400
    assert "did not issue a token" in answer.text  # PKCE: the attacker's verifier fails
    assert await flow.count(ConnectionRow) == 0
    # The code was spent on the failed attempt (single use at Salesforce): the victim's
    # own callback fails clearly too, and nothing is stored under either id.
    again = await flow.callback(victim_query)
    assert again.status_code == 400
    assert "did not issue a token" in again.text
    assert await flow.count(ConnectionRow) == 0


async def test_a_state_that_expired_before_the_callback_is_refused(flow: Flow) -> None:  # noqa: F811
    params = await flow.authorize_params(await flow.start())
    query = flow.consent(params, flow.emu.orgs[0].users[0].username)
    flow.clock.advance(flow.gateway.settings.connect_session_ttl_seconds + 1)
    answer = await flow.callback(query)
    assert answer.status_code in (400, 410)
    assert "expired" in answer.text
    assert flow.code_grants() == 0  # the code was never redeemed
    assert await flow.count(ConnectionRow) == 0
