"""``/integrations``: OAuth app configurations (Salesforce connected apps)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status
from pydantic import SecretStr

from tokenkeep.api.deps import GatewayDep, StoreDep
from tokenkeep.api.schemas import (
    INTEGRATION_KEY_PATTERN,
    IntegrationIn,
    IntegrationList,
    IntegrationOut,
)
from tokenkeep.api.urls import check_upstream_url
from tokenkeep.config import Settings
from tokenkeep.secret import Secret
from tokenkeep.store import Store
from tokenkeep.store.records import Integration
from tokenkeep.store.sentinel import KEEP, Keep

__all__ = ["integration_out", "router", "save_integration"]

router = APIRouter(prefix="/integrations", tags=["integrations"])

KeyPath = Annotated[str, Path(pattern=INTEGRATION_KEY_PATTERN, description="integration key")]

DEFAULT_SESSION_TIMEOUT_SECONDS = 7200  # Salesforce's default org session timeout (2 h)


def integration_out(integration: Integration) -> IntegrationOut:
    """The API view of an integration: secrets only as ``has_*`` flags."""
    return IntegrationOut(
        key=integration.key,
        provider=integration.provider,
        client_id=integration.client_id,
        login_url=integration.login_url,
        scopes=list(integration.scopes),
        auth_mode=integration.auth_mode,
        username=integration.username,
        session_timeout_seconds=integration.session_timeout_seconds,
        has_client_secret=integration.has_client_secret,
        has_private_key=integration.has_private_key,
        created_at=integration.created_at,
        updated_at=integration.updated_at,
    )


@router.put("/{key}", response_model=IntegrationOut, summary="Create or replace an integration")
async def put_integration(
    key: KeyPath, body: IntegrationIn, response: Response, store: StoreDep, gateway: GatewayDep
) -> IntegrationOut:
    """201 when created, 200 when replaced. Secrets are stored encrypted, never returned.

    A secret field left out keeps the stored value (so a PUT that changes the scopes need
    not resend the client secret); ``null`` removes it.
    """
    integration, created = await save_integration(store, gateway.settings, key, body)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return integration_out(integration)


async def save_integration(
    store: Store, settings: Settings, key: str, body: IntegrationIn
) -> tuple[Integration, bool]:
    """Validate and store an integration (shared by the API and the CLI)."""
    check_upstream_url(body.login_url, "login_url", settings)
    return await store.integrations.put(
        key,
        provider=body.provider,
        client_id=body.client_id,
        client_secret=_secret(body, "client_secret"),
        login_url=body.login_url,
        scopes=body.scopes,
        auth_mode=body.auth_mode,
        private_key=_secret(body, "private_key"),
        username=body.username,
        session_timeout_seconds=body.session_timeout_seconds or DEFAULT_SESSION_TIMEOUT_SECONDS,
    )


@router.get("", response_model=IntegrationList, summary="List integrations")
async def list_integrations(store: StoreDep) -> IntegrationList:
    """Every integration, secrets as ``has_*`` flags."""
    return IntegrationList(data=[integration_out(i) for i in await store.integrations.list()])


@router.get("/{key}", response_model=IntegrationOut, summary="Show an integration")
async def get_integration(key: KeyPath, store: StoreDep) -> IntegrationOut:
    """404 ``not_found`` if there is no such integration."""
    return integration_out(await store.integrations.get(key))


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an integration")
async def delete_integration(key: KeyPath, store: StoreDep) -> Response:
    """204; 404 if unknown; 409 ``conflict`` while connections still use it."""
    await store.integrations.delete(key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _secret(body: IntegrationIn, field: str) -> Secret | Keep | None:
    if field not in body.model_fields_set:
        return KEEP
    value = getattr(body, field)
    if isinstance(value, SecretStr) and value.get_secret_value():
        return Secret(value.get_secret_value())
    return None
