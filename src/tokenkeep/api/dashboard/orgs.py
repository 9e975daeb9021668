"""``/dashboard/orgs``: org health (the read model of ``GET /orgs``), one org's page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from tokenkeep.api.dashboard.render import error_page, page
from tokenkeep.api.dashboard.session import ViewerDep
from tokenkeep.api.dashboard.words import describe_operation, reason_words
from tokenkeep.api.deps import get_gateway
from tokenkeep.errors import NotFoundError, ValidationError
from tokenkeep.orgs.overview import list_orgs, show_org
from tokenkeep.store.operations import LogQuery
from tokenkeep.vocabulary import CONNECTION_STATUSES

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/orgs")
async def org_list(
    request: Request,
    viewer: ViewerDep,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    """Orgs with connections, by org id, 50 a page."""
    gateway = get_gateway(request)
    try:
        orgs, next_cursor = await list_orgs(
            gateway.store,
            gateway.settings,
            gateway.clock,
            limit=50,
            cursor=cursor or None,
            health=gateway.org_health,
        )
    except ValidationError as exc:
        return error_page(request, 400, "Bad request", exc.message)
    return await page(
        request,
        "orgs.html",
        viewer,
        active="orgs",
        title="Orgs",
        orgs=orgs,
        statuses=CONNECTION_STATUSES,
        next_url=f"{request.url.path}?{urlencode({'cursor': next_cursor})}"
        if next_cursor
        else None,
        first_url=request.url.path if cursor else None,
    )


@router.get("/orgs/{org_id}")
async def org_page(
    request: Request, viewer: ViewerDep, org_id: Annotated[str, Path(max_length=64)]
) -> HTMLResponse:
    """One org: health, API usage, learned timeout, causes, pause; its connections and log."""
    gateway = get_gateway(request)
    store = gateway.store
    try:
        org = await show_org(
            store, gateway.settings, gateway.clock, org_id, health=gateway.org_health
        )
    except NotFoundError:
        return error_page(request, 404, "No such org", f"tokenkeep knows no org {org_id!r}.")
    connections, total = await store.dashboard.search_connections(org_id=org_id, limit=25)
    await gateway.oplog.flush_all()
    log = await store.operations.page(LogQuery(org_id=org_id, limit=25))
    return await page(
        request,
        "org.html",
        viewer,
        active="orgs",
        title=f"Org {org_id}",
        org=org,
        statuses=CONNECTION_STATUSES,
        connections=connections.items,
        total=total,
        log=log.entries,
        describe=describe_operation,
        reason_words=reason_words,
    )
