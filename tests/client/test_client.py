"""The SDK's control-API client against a real gateway (and the emulator behind it).

CRUD of integrations and connections through ``Client`` and ``AsyncClient``, pagination,
and the typed errors a user catches (404, 409, 401, 422, unreachable).
"""

from __future__ import annotations

import asyncio

import pytest

from tokenkeep.client import (
    AsyncClient,
    Client,
    Connection,
    GatewayUnreachableError,
    Integration,
    TokenkeepAPIError,
)
from tokenkeep.errors import ConflictError, NotFoundError, UnauthorizedError, ValidationError
from tokenkeep.secret import Secret
from tokenkeep.server import free_port
from tokenkeep.testing import GatewayUnderTest

ORG_ID = "00D000000000001AAA"
USER_ID = "005000000000001AAA"


def _import(tk: Client, connection_id: str, integration: str = "emulator") -> Connection:
    return tk.import_connection(
        integration,
        connection_id=connection_id,
        access_token=Secret("00Dxx!canary-access-token"),
        refresh_token="canary-refresh-token",
        instance_url="https://acme.my.salesforce.com",
        id_url=f"https://login.salesforce.com/id/{ORG_ID}/{USER_ID}",
        issued_at="1700000000000",
        metadata={"tenant": "acme"},
    )


async def test_integrations_crud_sync(tokenkeep_gateway: GatewayUnderTest) -> None:
    """put (created, then replaced), get, list, delete; secrets only as flags."""
    gw = tokenkeep_gateway

    def scenario() -> None:
        with gw.client() as tk:
            created, was_new = tk.put_integration(
                "sandbox",
                client_id="3MVG9-sandbox",
                client_secret=Secret("s3cret"),
                login_url="https://test.salesforce.com",
                scopes=["api", "refresh_token"],
                session_timeout_seconds=900,
            )
            assert was_new is True
            assert isinstance(created, Integration)
            assert created.key == "sandbox"
            assert created.has_client_secret is True
            assert created.scopes == ("api", "refresh_token")
            assert created.session_timeout_seconds == 900

            replaced, was_new = tk.put_integration(
                "sandbox", client_id="3MVG9-sandbox-2", login_url="https://test.salesforce.com"
            )
            assert was_new is False
            assert replaced.client_id == "3MVG9-sandbox-2"
            # A secret left out keeps the stored one.
            assert replaced.has_client_secret is True

            assert tk.get_integration("sandbox").client_id == "3MVG9-sandbox-2"
            assert {i.key for i in tk.list_integrations()} == {"emulator", "sandbox"}
            tk.delete_integration("sandbox")
            with pytest.raises(NotFoundError) as missing:
                tk.get_integration("sandbox")
            assert missing.value.code == "not_found"
            assert missing.value.status_code == 404

    await asyncio.to_thread(scenario)


async def test_connections_import_list_get_delete(tokenkeep_gateway: GatewayUnderTest) -> None:
    """Import never echoes tokens; get/list/delete; pagination iterator sees every one."""
    gw = tokenkeep_gateway

    def scenario() -> None:
        with gw.client() as tk:
            first = _import(tk, "acme")
            assert first.id == "acme"
            assert first.integration == "emulator"
            assert first.org_id == ORG_ID
            assert first.user_id == USER_ID
            assert first.has_refresh_token is True
            assert first.metadata == {"tenant": "acme"}
            assert "canary" not in repr(first)

            for n in range(6):
                _import(tk, f"tenant-{n}")
            page = tk.list_connections(limit=3)
            assert len(page.items) == 3
            assert page.next_cursor is not None
            ids = [c.id for c in tk.iter_connections(page_size=3)]
            assert ids == ["acme"] + [f"tenant-{n}" for n in range(6)]
            assert [c.id for c in tk.iter_connections(org_id=ORG_ID, page_size=50)] == ids

            assert tk.get_connection("tenant-3").instance_url == "https://acme.my.salesforce.com"
            tk.delete_connection("tenant-3")
            with pytest.raises(NotFoundError):
                tk.get_connection("tenant-3")
            with pytest.raises(NotFoundError):
                tk.delete_connection("tenant-3")

    await asyncio.to_thread(scenario)


async def test_typed_errors(tokenkeep_gateway: GatewayUnderTest) -> None:
    """409 duplicate id and integration in use, 401 bad key, 422 validation, 404 route."""
    gw = tokenkeep_gateway
    async with gw.async_client() as tk:
        await tk.import_connection(
            "emulator",
            connection_id="dup",
            access_token="tok",
            instance_url="https://acme.my.salesforce.com",
        )
        with pytest.raises(ConflictError) as duplicate:
            await tk.import_connection(
                "emulator",
                connection_id="dup",
                access_token="tok",
                instance_url="https://acme.my.salesforce.com",
            )
        assert duplicate.value.code == "conflict"
        with pytest.raises(ConflictError):
            await tk.delete_integration("emulator")  # "dup" still uses it
        with pytest.raises(NotFoundError):
            await tk.import_connection(
                "no-such-integration",
                access_token="tok",
                instance_url="https://acme.my.salesforce.com",
            )
        with pytest.raises(ValidationError) as invalid:
            await tk.put_integration("bad", client_id="x", login_url="ftp://nowhere")
        assert "login_url" in invalid.value.message

    async with AsyncClient(gw.base_url, "tk_not-a-key") as wrong:
        with pytest.raises(UnauthorizedError) as denied:
            await wrong.list_integrations()
        assert denied.value.code == "unauthorized"
        assert denied.value.status_code == 401


async def test_errors_without_a_dedicated_class_keep_code_and_status() -> None:
    """A gateway that is not there: GatewayUnreachableError, a TokenkeepAPIError."""
    port = free_port()
    async with AsyncClient(f"http://127.0.0.1:{port}", "tk_x", timeout=5) as tk:
        with pytest.raises(GatewayUnreachableError) as down:
            await tk.list_integrations()
    assert isinstance(down.value, TokenkeepAPIError)
    assert down.value.code == "gateway_unreachable"
    assert f"127.0.0.1:{port}" in down.value.message


async def test_async_client_pages_through_connections(tokenkeep_gateway: GatewayUnderTest) -> None:
    """``async for`` over ``iter_connections`` follows the cursor to the end."""
    gw = tokenkeep_gateway
    async with gw.async_client() as tk:
        for n in range(5):
            await tk.import_connection(
                "emulator",
                connection_id=f"a{n}",
                access_token="tok",
                instance_url="https://acme.my.salesforce.com",
            )
        seen = [c.id async for c in tk.iter_connections(page_size=2)]
        assert seen == [f"a{n}" for n in range(5)]
        await tk.delete_connection("a0")
        assert [c.id async for c in tk.iter_connections(integration="emulator")] == seen[1:]
        assert (await tk.get_connection("a4")).status == "active"
