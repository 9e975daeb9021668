"""``/webhooks`` (endpoints) and ``/events`` (the outbox with its deliveries).

A webhook URL is checked when it is stored (``tokenkeep.events.targets``: http(s), and no
loopback, private or link-local address unless ``TOKENKEEP_ALLOW_INSECURE_LOOPBACK``) and
again before every delivery.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from tokenkeep.api.deps import GatewayDep, StoreDep
from tokenkeep.api.inputs import text_path, text_query
from tokenkeep.api.responses import BODY_ERRORS, error_responses
from tokenkeep.api.webhook_schemas import (
    EventList,
    EventOut,
    RedeliverOut,
    WebhookCreated,
    WebhookIn,
    WebhookList,
    WebhookOut,
    event_out,
    webhook_out,
)
from tokenkeep.errors import ValidationError
from tokenkeep.events.signer import new_webhook_secret
from tokenkeep.events.targets import webhook_target_problem
from tokenkeep.store.outbox_events import MAX_EVENT_PAGE

__all__ = ["router"]

router = APIRouter(tags=["webhooks"])

EndpointId = Annotated[str, text_path(max_length=40)]
EventId = Annotated[str, text_path(max_length=64)]


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Add a webhook endpoint (its secret is shown once)",
    responses=BODY_ERRORS,
)
async def create_webhook(body: WebhookIn, store: StoreDep, gateway: GatewayDep) -> WebhookCreated:
    """422 ``validation_error`` for a URL that may not receive webhooks or an unknown
    event type."""
    problem = await webhook_target_problem(
        body.url, allow_private=gateway.settings.allow_insecure_loopback
    )
    if problem is not None:
        raise ValidationError(f"url: {problem}.")
    secret = new_webhook_secret()
    endpoint = await store.webhooks.create(
        url=body.url,
        secret=secret,
        events=[str(e) for e in body.events] if body.events else None,
        description=body.description,
    )
    return WebhookCreated(**webhook_out(endpoint).model_dump(), secret=secret.reveal())


@router.get("/webhooks", response_model=WebhookList, summary="List webhook endpoints")
async def list_webhooks(store: StoreDep) -> WebhookList:
    return WebhookList(data=[webhook_out(e) for e in await store.webhooks.list()])


@router.get(
    "/webhooks/{endpoint_id}",
    response_model=WebhookOut,
    summary="Show an endpoint",
    responses=error_responses(404, 422),
)
async def get_webhook(endpoint_id: EndpointId, store: StoreDep) -> WebhookOut:
    return webhook_out(await store.webhooks.get(endpoint_id))


@router.delete(
    "/webhooks/{endpoint_id}",
    status_code=204,
    summary="Delete an endpoint",
    responses=error_responses(404, 409, 422),
)
async def delete_webhook(endpoint_id: EndpointId, store: StoreDep) -> Response:
    """Its pending deliveries go with it; 409 for the ``TOKENKEEP_WEBHOOK_URL`` one."""
    await store.webhooks.delete(endpoint_id)
    return Response(status_code=204)


@router.get(
    "/events",
    response_model=EventList,
    summary="The outbox, newest first",
    responses=error_responses(422),
)
async def list_events(
    store: StoreDep,
    *,
    type: Annotated[str | None, text_query(max_length=64)] = None,  # noqa: A002 (the API's word)
    connection_id: Annotated[str | None, text_query(max_length=100)] = None,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENT_PAGE)] = 50,
    cursor: Annotated[str | None, text_query(min_length=1, max_length=40)] = None,
) -> EventList:
    """Each event with its delivery per endpoint; pass ``next_cursor`` back as ``cursor``."""
    events, next_cursor = await store.events.list_events(
        limit=limit, cursor=cursor, event_type=type, connection_id=connection_id, status=status
    )
    return EventList(data=[event_out(e) for e in events], next_cursor=next_cursor)


@router.get(
    "/events/{event_id}",
    response_model=EventOut,
    summary="Show an event",
    responses=error_responses(404, 422),
)
async def get_event(event_id: EventId, store: StoreDep) -> EventOut:
    return event_out(await store.events.get_event(event_id))


@router.post(
    "/events/{event_id}/redeliver",
    status_code=202,
    response_model=RedeliverOut,
    summary="Send an event again",
    responses=error_responses(404, 422),
)
async def redeliver_event(
    event_id: EventId,
    store: StoreDep,
    gateway: GatewayDep,
    endpoint_id: Annotated[str | None, text_query(max_length=40)] = None,
) -> RedeliverOut:
    """A new delivery round for ``endpoint_id``, or for every endpoint subscribed to the
    event's type; 404 ``not_found`` for an unknown event or endpoint."""
    targets = await store.deliveries.redeliver(
        event_id, now=gateway.clock.now(), endpoint_id=endpoint_id
    )
    if gateway.webhooks is not None:
        gateway.webhooks.wake()
    return RedeliverOut(event_id=event_id, endpoint_ids=targets)
