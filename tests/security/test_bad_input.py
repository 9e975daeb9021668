"""Bad input never answers 500 and never reaches the store (issue 13, defect 4).

A generated corpus: every string field of every request body, every query and path value,
with a NUL or another control character in it; ``issued_at`` negative, huge or not a
number; dates that overflow once converted to UTC. Each request must answer 400 or 422 in
the one error shape, and the store must hold exactly what it held before (row counts of
every table a request could write, and the existing integration and connection unchanged).
PostgreSQL refuses NUL in text (``psycopg.DataError``) and SQLite stores it: both engines run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from tests.api.api_helpers import Api, import_body
from tests.security.conftest import row_counts

# NUL (PostgreSQL's "invalid byte sequence"), a bell, an escape, DEL, and a header break.
BAD_CHARS = ["\x00", "\x07", "\x1b", "\x7f", "\r\n"]

INTEGRATION = {
    "client_id": "client-1",
    "client_secret": "shh-secret",
    "login_url": "https://login.salesforce.com",
    "provider": "salesforce",
    "username": "admin@acme.example",
    "scopes": ["api", "refresh_token"],
}
CONNECTION = import_body(
    "fresh",
    issued_at=None,
    metadata={"tenant": "t1", "nested": {"tags": ["a", "b"], "deep": {"k": "v"}}},
)
SESSION = {"integration": "sf", "metadata": {"tenant": "t1", "nested": {"tags": ["a"]}}}


def _with(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """``body`` with the value at ``path`` replaced (a key ``("key", k)`` renames key k)."""
    out = copy.deepcopy(body)
    target: Any = out
    for step in path[:-1]:
        target = target[step]
    last = path[-1]
    if isinstance(last, tuple):  # rename a key: the NUL goes into the key itself
        _, old = last
        target[value] = target.pop(old)
    else:
        target[last] = value
    return out


def _poison(text: str, bad: str) -> str:
    return text[:3] + bad + text[3:]


def body_cases() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(label, method, path, body) for every string field and every bad character."""
    integration_fields: list[tuple[Any, ...]] = [
        ("client_id",),
        ("client_secret",),
        ("login_url",),
        ("provider",),
        ("username",),
        ("scopes", 0),
    ]
    connection_fields: list[tuple[Any, ...]] = [
        ("integration",),
        ("credentials", "instance_url"),
        ("credentials", "id"),
        ("credentials", "access_token"),
        ("credentials", "refresh_token"),
        ("metadata", "tenant"),
        ("metadata", ("key", "tenant")),
        ("metadata", "nested", "tags", 1),
        ("metadata", "nested", "deep", "k"),
        ("metadata", "nested", "deep", ("key", "k")),
    ]
    session_fields: list[tuple[Any, ...]] = [
        ("integration",),
        ("metadata", "tenant"),
        ("metadata", ("key", "tenant")),
        ("metadata", "nested", "tags", 0),
    ]
    for bad in BAD_CHARS:
        for key in ("sf", "other"):  # replacing the stored one, and creating a new one
            for path in integration_fields:
                old = _get(INTEGRATION, path)
                yield (
                    f"PUT {key} {path} {bad!r}",
                    "PUT",
                    f"/integrations/{key}",
                    _with(INTEGRATION, path, _poison(old, bad)),
                )
        for path in connection_fields:
            old = _get(CONNECTION, path)
            yield (
                f"POST /connections {path} {bad!r}",
                "POST",
                "/connections",
                _with(CONNECTION, path, _poison(old, bad)),
            )
        for path in session_fields:
            old = _get(SESSION, path)
            yield (
                f"POST /connect/sessions {path} {bad!r}",
                "POST",
                "/connect/sessions",
                _with(SESSION, path, _poison(old, bad)),
            )
    # A private key is PEM: newlines are its syntax, but NUL is never in one.
    yield (
        "PUT private_key NUL",
        "PUT",
        "/integrations/jwt",
        {"client_id": "c", "auth_mode": "jwt_bearer", "username": "u", "private_key": "-\x00-"},
    )
    for bad_issued_at in (-1, -1767225600000, 10**30, 2**63, "abc", "9" * 40, "-5", 1.5e300):
        creds = {"access_token": "x", "instance_url": "https://a.my.salesforce.com"}
        yield (
            f"POST /connections issued_at={bad_issued_at!r}",
            "POST",
            "/connections",
            import_body("fresh", credentials={**creds, "issued_at": bad_issued_at}),
        )


def _get(body: dict[str, Any], path: tuple[Any, ...]) -> str:
    target: Any = body
    for step in path:
        target = step[1] if isinstance(step, tuple) else target[step]
    return str(target)


QUERY_CASES = [
    "/connections?integration={}",
    "/connections?org_id={}",
    "/connections?cursor={}",
    "/logs?kind={}",
    "/logs?connection_id={}",
    "/logs?org_id={}",
    "/logs?cause={}",
    "/logs?outcome={}",
    "/logs?status={}",
    "/logs?cursor={}",
    "/orgs?integration={}",
    "/orgs?cursor={}",
    "/orgs/{}",
    "/events?type={}",
    "/events?connection_id={}",
    "/events?cursor={}",
    "/events/{}",
    "/webhooks/{}",
    "/integrations/{}",
    "/connections/{}",
]

DATE_CASES = [
    "/logs?since=9999-12-31T23:59:59-14:00",
    "/logs?until=9999-12-31T23:59:59-14:00",
    "/logs?since=0001-01-01T00:00:00%2B14:00",
    "/logs?since=-5.525870439522252e%2B16",
    "/logs?until=1767225600",
    "/logs?since=not-a-date",
]


async def _seed(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    """The integration ``sf`` and the connection ``acme``, as the API shows them."""
    r = await api.client.put("/integrations/sf", json=INTEGRATION)
    assert r.status_code == 201, r.text
    r = await api.client.post("/connections", json=import_body("acme", metadata={"a": 1}))
    assert r.status_code == 201, r.text
    return await _shown(api)


async def _shown(api: Api) -> tuple[dict[str, Any], dict[str, Any]]:
    integration = (await api.client.get("/integrations/sf")).json()
    connection = (await api.client.get("/connections/acme")).json()
    return integration, connection


def _problem(label: str, response: Any) -> str | None:
    """Why ``response`` is not a refusal in our error shape, or None when it is one."""
    if response.status_code not in (400, 422):
        return f"{label}: {response.status_code} {response.text[:200]}"
    body = response.json()
    if set(body) != {"error"} or set(body["error"]) != {"code", "message"}:
        return f"{label}: not the error shape: {body}"
    if body["error"]["code"] not in ("validation_error", "invalid_json"):
        return f"{label}: code {body['error']['code']}"
    return None


async def test_every_string_field_refuses_control_characters(api: Api) -> None:
    seeded = await _seed(api)
    before = await row_counts(api)
    problems = []
    cases = list(body_cases())
    for label, method, path, body in cases:
        response = await api.client.request(method, path, json=body)
        problem = _problem(label, response)
        if problem is None and await row_counts(api) != before:
            problem = f"{label}: refused, but the store changed"
        if problem:
            problems.append(problem)
            before = await row_counts(api)
    assert not problems, f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems)
    assert await _shown(api) == seeded  # the stored integration and connection are intact


async def test_every_query_and_path_value_refuses_control_characters(api: Api) -> None:
    await _seed(api)
    before = await row_counts(api)
    problems = []
    cases = [(template, bad) for template in QUERY_CASES for bad in BAD_CHARS]
    for template, bad in cases:
        path = template.format(quote("ab" + bad, safe=""))
        response = await api.client.get(path)
        label = f"GET {path}"
        # A path value with a control character names nothing: 404 or 422 are both true.
        ok_statuses = (404,) if "?" not in template else ()
        if response.status_code in ok_statuses and response.json()["error"]["code"]:
            continue
        problem = _problem(label, response)
        if problem:
            problems.append(problem)
    assert not problems, f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems)
    assert await row_counts(api) == before


async def test_dates_out_of_range_or_not_iso_are_refused(api: Api) -> None:
    problems = [
        problem
        for path in DATE_CASES
        if (problem := _problem(f"GET {path}", await api.client.get(path))) is not None
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("issued_at", [0, 1767225600000, "1767225600000"])
async def test_a_plausible_issued_at_is_still_accepted(api: Api, issued_at: object) -> None:
    await api.client.put("/integrations/sf", json=INTEGRATION)
    creds = {"access_token": "x", "instance_url": "https://a.my.salesforce.com"}
    r = await api.client.post(
        "/connections", json=import_body("ok", credentials={**creds, "issued_at": issued_at})
    )
    assert r.status_code == 201, r.text
