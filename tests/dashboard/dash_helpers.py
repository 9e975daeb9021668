"""Shared steps of the dashboard tests: log in over HTTP, read a form's CSRF token, bulk rows."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import insert

from tokenkeep.harness import GatewayUnderTest
from tokenkeep.store import Store
from tokenkeep.store.connection_tokens import token_columns
from tokenkeep.store.models import ConnectionRow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PAGES = ("", "/connections", "/orgs", "/logs", "/logs/rows", "/webhooks")


def csrf_of(html: str) -> str:
    """The first CSRF token in a page's forms."""
    match = _CSRF.search(html)
    assert match is not None, "no CSRF field in the page"
    return match.group(1)


def browser(gw: GatewayUnderTest) -> httpx.AsyncClient:
    """An HTTP client with cookies and no API key, as a browser is."""
    return httpx.AsyncClient(base_url=gw.base_url, timeout=30)


async def log_in(client: httpx.AsyncClient, api_key: str) -> httpx.Response:
    """The login form, filled in and sent (answers the redirect, not followed)."""
    form = await client.get("/dashboard/login")
    assert form.status_code == 200
    return await client.post(
        "/dashboard/login",
        data={"api_key": api_key, "csrf_token": csrf_of(form.text), "next": "/dashboard"},
    )


@contextlib.asynccontextmanager
async def logged_in(gw: GatewayUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client with a dashboard session."""
    async with browser(gw) as client:
        answer = await log_in(client, gw.api_key.reveal())
        assert answer.status_code == 303, answer.text
        yield client


async def insert_connections(
    store: Store,
    count: int,
    *,
    integration: str,
    start: datetime,
    orgs: int = 100,
    access_token: str = "00Dbulk!AQbulkAccessToken",
    refresh_token: str = "5Aepbulk",
    status_every: int = 7,
) -> None:
    """``count`` connections straight into the table (one executemany), ids ``bulk-00000``...

    Every ``status_every``-th one needs a reconnect (reason ``revoked:inactive_user``)."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        conn_id = f"bulk-{i:05d}"
        broken = i % status_every == 0
        rows.append(
            {
                "id": conn_id,
                "integration_key": integration,
                "org_id": f"00Dbulk{i % orgs:011d}",
                "user_id": f"005bulk{i:011d}",
                "username": f"user{i}@bulk.example.com",
                "instance_url": f"https://bulk{i % orgs}.my.salesforce.com",
                "id_url": None,
                "status": "needs_reauth" if broken else "active",
                "status_reason": "revoked:inactive_user" if broken else None,
                "version": 1,
                "issued_at": start,
                "expires_at": start + timedelta(hours=2),
                "next_refresh_at": start + timedelta(hours=1, minutes=30),
                "refresh_attempts": 0,
                "last_refresh_at": None,
                "last_error": None,
                "issued_to_address": "127.0.0.1",
                "last_used_from_address": None,
                "diagnosis": None,
                "lease_owner": None,
                "lease_until": None,
                "metadata_": {},
                "created_at": start + timedelta(milliseconds=i),
                "updated_at": start,
                **token_columns(store.keyring, conn_id, access_token, refresh_token),
            }
        )
    async with store.db.write() as session:
        await session.execute(insert(ConnectionRow), rows)
