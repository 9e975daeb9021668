"""Bodies of ``/webhooks`` and ``/events``. The endpoint secret appears in exactly one
answer: the ``201`` of ``POST /webhooks``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenkeep.api.inputs import Text, Url
from tokenkeep.events.envelope import event_data
from tokenkeep.store.outbox_events import DeliveryStatus, OutboxEvent
from tokenkeep.store.webhooks import WebhookEndpoint
from tokenkeep.vocabulary import EventType

__all__ = [
    "EventList",
    "EventOut",
    "RedeliverOut",
    "WebhookCreated",
    "WebhookIn",
    "WebhookList",
    "WebhookOut",
    "event_out",
    "webhook_out",
]

_EVENT_TYPES = tuple(t.value for t in EventType)


class WebhookIn(BaseModel):
    """``POST /webhooks``: where to send, which events (default: all), a note."""

    model_config = ConfigDict(extra="forbid")

    url: Url = Field(min_length=1, max_length=2000)
    # The enum in the document: a client (and schemathesis) knows the event types.
    events: list[EventType] | None = Field(default=None, max_length=len(_EVENT_TYPES))
    description: Text | None = Field(default=None, max_length=500)

    @field_validator("events")
    @classmethod
    def _all_when_empty(cls, value: list[EventType] | None) -> list[EventType] | None:
        return value or None  # an empty list means every event, as leaving it out does


class WebhookOut(BaseModel):
    """An endpoint, without its secret. ``events`` null: every event type."""

    id: str
    url: str
    events: list[str] | None
    description: str | None
    source: str
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookOut):
    """The ``201`` of ``POST /webhooks``: the only answer that shows the secret."""

    secret: str


class WebhookList(BaseModel):
    data: list[WebhookOut]


class DeliveryOut(BaseModel):
    """One endpoint's delivery of an event."""

    endpoint_id: str
    state: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    failed_at: datetime | None


class EventOut(BaseModel):
    """An outbox event: ``data`` is the webhook body's ``data``."""

    id: str
    type: str
    timestamp: datetime
    connection_id: str | None
    org_id: str | None
    status: str
    data: dict[str, Any]
    deliveries: list[DeliveryOut]


class EventList(BaseModel):
    data: list[EventOut]
    next_cursor: str | None


class RedeliverOut(BaseModel):
    """``202`` of ``POST /events/{id}/redeliver``: the endpoints it was queued for."""

    event_id: str
    endpoint_ids: list[str]


def webhook_out(endpoint: WebhookEndpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events) if endpoint.events is not None else None,
        description=endpoint.description,
        source=endpoint.source,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def _delivery_out(d: DeliveryStatus) -> DeliveryOut:
    return DeliveryOut(
        endpoint_id=d.endpoint_id,
        state=d.state,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        last_attempt_at=d.last_attempt_at,
        next_attempt_at=d.next_at,
        delivered_at=d.delivered_at,
        failed_at=d.failed_at,
    )


def event_out(event: OutboxEvent) -> EventOut:
    return EventOut(
        id=event.event_id,
        type=event.event_type,
        timestamp=event.created_at,
        connection_id=event.connection_id,
        org_id=event.org_id,
        status=event.status,
        data=event_data(event.payload),
        deliveries=[_delivery_out(d) for d in event.deliveries],
    )
