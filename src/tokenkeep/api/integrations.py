"""``/integrations``: OAuth app configurations (Salesforce connected apps)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from tokenkeep.api.deps import GatewayDep, StoreDep
from tokenkeep.api.responses import BODY_ERRORS, error_responses
from tokenkeep.api.schemas import (
    INTEGRATION_KEY_PATTERN,
    IntegrationIn,
    IntegrationList,
    IntegrationOut,
    integration_out,
)
from tokenkeep.lifecycle.integrations import save_integration

__all__ = ["router"]

router = APIRouter(prefix="/integrations", tags=["integrations"])

KeyPath = Annotated[str, Path(pattern=INTEGRATION_KEY_PATTERN, description="integration key")]


@router.put(
    "/{key}",
    response_model=IntegrationOut,
    summary="Create or replace an integration",
    responses={201: {"model": IntegrationOut, "description": "Created."}, **BODY_ERRORS},
)
async def put_integration(
    key: KeyPath, body: IntegrationIn, response: Response, store: StoreDep, gateway: GatewayDep
) -> IntegrationOut:
    """201 when created, 200 when replaced. Secrets are stored encrypted, never returned.

    A secret field left out keeps the stored value (so a PUT that changes the scopes need
    not resend the client secret); ``null`` removes it.
    """
    integration, created = await save_integration(store, gateway.settings, key, body.to_spec())
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return integration_out(integration)


@router.get("", response_model=IntegrationList, summary="List integrations")
async def list_integrations(store: StoreDep) -> IntegrationList:
    """Every integration, secrets as ``has_*`` flags."""
    return IntegrationList(data=[integration_out(i) for i in await store.integrations.list()])


@router.get(
    "/{key}",
    response_model=IntegrationOut,
    summary="Show an integration",
    responses=error_responses(404, 422),
)
async def get_integration(key: KeyPath, store: StoreDep) -> IntegrationOut:
    """404 ``not_found`` if there is no such integration."""
    return integration_out(await store.integrations.get(key))


@router.delete(
    "/{key}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an integration",
    responses=error_responses(404, 409, 422),
)
async def delete_integration(key: KeyPath, store: StoreDep) -> Response:
    """204; 404 if unknown; 409 ``conflict`` while connections still use it."""
    await store.integrations.delete(key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
