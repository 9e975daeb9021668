"""``/dashboard/webhooks``: endpoints (never their secrets), recent deliveries, redeliver."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tokenkeep.api.dashboard.formatting import plain_url
from tokenkeep.api.dashboard.render import error_page, page
from tokenkeep.api.dashboard.session import PREFIX, ViewerDep, WriterDep
from tokenkeep.api.deps import get_gateway
from tokenkeep.errors import TokenkeepError, ValidationError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

EVENT_PAGE = 25


@router.get("/webhooks")
async def webhooks_page(
    request: Request,
    viewer: ViewerDep,
    status: Annotated[Literal["pending", "delivered", "failed", ""], Query()] = "",
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    """Endpoints and the outbox, newest first, with each event's deliveries."""
    store = get_gateway(request).store
    endpoints = await store.webhooks.list()
    try:
        events, next_cursor = await store.events.list_events(
            limit=EVENT_PAGE, cursor=cursor or None, status=status or None
        )
    except ValidationError as exc:
        return error_page(request, 400, "Bad request", exc.message)
    kept = {"status": status} if status else {}
    return await page(
        request,
        "webhooks.html",
        viewer,
        active="webhooks",
        title="Webhooks",
        endpoints=endpoints,
        events=events,
        status=status,
        plain_url=plain_url,
        next_url=f"{request.url.path}?{urlencode({**kept, 'cursor': next_cursor})}"
        if next_cursor
        else None,
        first_url=f"{request.url.path}?{urlencode(kept)}" if cursor else None,
    )


@router.post("/events/{event_id}/redeliver")
async def redeliver(
    request: Request, viewer: WriterDep, event_id: Annotated[str, Path(max_length=64)]
) -> Response:
    """``POST /events/{id}/redeliver``'s path: a new round for every subscribed endpoint."""
    gateway = get_gateway(request)
    try:
        targets = await gateway.store.deliveries.redeliver(event_id, now=gateway.clock.now())
    except TokenkeepError as exc:
        message = f"Not redelivered: {exc.message}"
    else:
        if gateway.webhooks is not None:
            gateway.webhooks.wake()
        message = f"Event {event_id} queued again for {len(targets)} endpoint(s)."
    await gateway.store.dashboard_sessions.set_flash(viewer.token, message)
    return RedirectResponse(f"{PREFIX}/webhooks", status_code=303)
