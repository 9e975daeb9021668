"""``/dashboard/connections``: the searchable list, and one connection's page."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse

from tokenkeep.api.dashboard.render import error_page, page
from tokenkeep.api.dashboard.session import ViewerDep
from tokenkeep.api.dashboard.timeline import timeline_page
from tokenkeep.api.dashboard.words import diagnosis_view, reason_words
from tokenkeep.api.deps import get_gateway
from tokenkeep.api.schemas import CONNECTION_ID_PATTERN
from tokenkeep.errors import NotFoundError, ValidationError
from tokenkeep.vocabulary import CAUSE_WORDS, CONNECTION_STATUSES

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

PAGE_SIZES = (25, 50, 100)
_Text = Query(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@router.get("/connections")
async def list_connections(
    request: Request,
    viewer: ViewerDep,
    *,
    q: Annotated[str | None, _Text] = None,
    status: Annotated[str | None, _Text] = None,
    integration: Annotated[str | None, _Text] = None,
    org: Annotated[str | None, _Text] = None,
    reason: Annotated[str | None, _Text] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=300)] = None,
) -> HTMLResponse:
    """Connections, newest first, filtered and paged (``cursor``: the next page)."""
    gateway = get_gateway(request)
    filters = {
        "q": _blank(q),
        "status": _blank(status),
        "integration": _blank(integration),
        "org": _blank(org),
        "reason": _blank(reason),
    }
    if filters["status"] is not None and filters["status"] not in CONNECTION_STATUSES:
        filters["status"] = None
    try:
        found, total = await gateway.store.dashboard.search_connections(
            text=filters["q"],
            status=filters["status"],
            integration=filters["integration"],
            org_id=filters["org"],
            reason=filters["reason"],
            limit=limit,
            cursor=_blank(cursor),
        )
    except ValidationError as exc:
        return error_page(request, 400, "Bad request", exc.message)
    kept = {k: v for k, v in filters.items() if v is not None}
    if limit != 50:
        kept["limit"] = str(limit)
    next_url = (
        f"{request.url.path}?{urlencode({**kept, 'cursor': found.next_cursor})}"
        if found.next_cursor
        else None
    )
    integrations = await gateway.store.integrations.list()
    return await page(
        request,
        "connections.html",
        viewer,
        active="connections",
        title="Connections",
        connections=found.items,
        total=total,
        filters=filters,
        limit=limit,
        page_sizes=PAGE_SIZES,
        first_url=f"{request.url.path}?{urlencode(kept)}" if cursor else None,
        next_url=next_url,
        statuses=CONNECTION_STATUSES,
        causes=sorted(CAUSE_WORDS),
        integrations=[i.key for i in integrations],
        reason_words=reason_words,
    )


@router.get("/connections/{connection_id}")
async def show_connection(
    request: Request,
    viewer: ViewerDep,
    connection_id: Annotated[str, Path(pattern=CONNECTION_ID_PATTERN)],
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> HTMLResponse:
    """One connection: its state, its diagnosis in words, its actions and its timeline."""
    gateway = get_gateway(request)
    store = gateway.store
    try:
        conn = await store.connections.get(connection_id)
    except NotFoundError:
        return error_page(
            request, 404, "No such connection", f"There is no connection {connection_id!r}."
        )
    await gateway.oplog.flush_all()
    try:
        timeline = await timeline_page(store, connection_id, _blank(cursor))
    except ValidationError as exc:
        return error_page(request, 400, "Bad request", exc.message)
    stored = await store.diagnoses.last(connection_id)
    path = request.url.path
    return await page(
        request,
        "connection.html",
        viewer,
        active="connections",
        title=f"Connection {conn.id}",
        conn=conn,
        diagnosis=diagnosis_view(conn, stored),
        timeline=timeline.entries,
        next_url=f"{path}?{urlencode({'cursor': timeline.next_cursor})}#timeline"
        if timeline.next_cursor
        else None,
        first_url=f"{path}#timeline" if cursor else None,
        reason_words=reason_words,
        org_state=await store.orgs.get(conn.org_id) if conn.org_id else None,
    )
