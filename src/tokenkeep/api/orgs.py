"""``/orgs``: org health, shared by every gateway (write pause, error rates, API usage)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tokenkeep.api.deps import GatewayDep, StoreDep
from tokenkeep.api.inputs import text_path, text_query
from tokenkeep.api.org_schemas import OrgList, OrgOut, org_out
from tokenkeep.api.responses import error_responses
from tokenkeep.orgs.overview import list_orgs, show_org

__all__ = ["router"]

router = APIRouter(prefix="/orgs", tags=["orgs"])


@router.get(
    "",
    response_model=OrgList,
    summary="List orgs and their health",
    responses=error_responses(422),
)
async def list_org_health(
    store: StoreDep,
    gateway: GatewayDep,
    *,
    integration: Annotated[str | None, text_query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, text_query(min_length=1, max_length=500)] = None,
) -> OrgList:
    """Orgs with connections, by org id; pass ``next_cursor`` back as ``cursor``."""
    page, next_cursor = await list_orgs(
        store,
        gateway.settings,
        gateway.clock,
        integration=integration,
        limit=limit,
        cursor=cursor,
        health=gateway.org_health,
    )
    return OrgList(data=[org_out(o) for o in page], next_cursor=next_cursor)


@router.get(
    "/{org_id}",
    response_model=OrgOut,
    summary="Show an org's health",
    responses=error_responses(404, 422),
)
async def get_org_health(
    org_id: Annotated[str, text_path(max_length=64)], store: StoreDep, gateway: GatewayDep
) -> OrgOut:
    """404 ``not_found`` for an org tokenkeep knows nothing about."""
    org = await show_org(store, gateway.settings, gateway.clock, org_id, health=gateway.org_health)
    return org_out(org)
