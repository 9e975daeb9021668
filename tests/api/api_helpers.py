"""Request bodies and small steps shared by the control-API tests."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tokenkeep.clock import ManualClock
from tokenkeep.config import Settings
from tokenkeep.runtime import Gateway

IDENTITY_URL = "https://login.salesforce.com/id/00D5g000004ABCDEAA/0055g000009XYZWAAA"


@dataclass
class Api:
    """A started gateway, an authenticated client on it, and its API key."""

    gateway: Gateway
    client: httpx.AsyncClient
    api_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def import_body(
    connection_id: str | None = "acme",
    *,
    integration: str = "sf",
    access_token: str = "00D5g000004ABCD!AQ0AccessTokenValue",
    refresh_token: str | None = "5Aep861RefreshTokenValue",
    instance_url: str = "https://acme.my.salesforce.com",
    identity_url: str | None = IDENTITY_URL,
    **extra: object,
) -> dict[str, object]:
    """A ``POST /connections`` body."""
    credentials: dict[str, object] = {"access_token": access_token, "instance_url": instance_url}
    if refresh_token is not None:
        credentials["refresh_token"] = refresh_token
    if identity_url is not None:
        credentials["id"] = identity_url
    body: dict[str, object] = {"integration": integration, "credentials": credentials, **extra}
    if connection_id is not None:
        body["connection_id"] = connection_id
    return body


async def put_integration(client: httpx.AsyncClient, key: str = "sf") -> None:
    response = await client.put(
        f"/integrations/{key}", json={"client_id": "client-1", "client_secret": "shh-secret"}
    )
    assert response.status_code in (200, 201), response.text


async def start_api(settings: Settings, clock: ManualClock) -> tuple[Gateway, str]:
    """Start a gateway on ``settings``; it and its first API key.

    Here, not in conftest.py: every tests/ folder has a ``conftest`` module, and
    ``from conftest import ...`` gets whichever pytest loaded last.
    """
    gateway = Gateway(settings, clock=clock)
    api_key = await gateway.start()
    assert api_key is not None
    return gateway, api_key.reveal()
