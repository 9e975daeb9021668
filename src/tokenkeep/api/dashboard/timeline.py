"""A connection's timeline: its operation-log rows and its outbox events, newest first.

Both sources are paged by keyset (the log by ``(at, id)``, the outbox by ``id``); a page
reads one page of each, merges them by time and keeps the first ``limit``. The cursor holds
the position reached in each source, so the next page continues both where this one
stopped: nothing is skipped or shown twice.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

from tokenkeep.api.dashboard.words import describe_operation
from tokenkeep.errors import ValidationError
from tokenkeep.store import Store
from tokenkeep.store.operations import LogQuery
from tokenkeep.store.outbox_events import OutboxEvent
from tokenkeep.store.records import Operation

__all__ = ["TimelineEntry", "TimelinePage", "timeline_page"]

TIMELINE_PAGE = 30


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of the timeline."""

    at: datetime
    kind: str  # an operation kind, or "event"
    outcome: str
    cause: str | None
    text: str


@dataclass(frozen=True, slots=True)
class TimelinePage:
    entries: list[TimelineEntry]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class _Position:
    op_after: tuple[datetime, int] | None = None  # the last log row shown
    event_before: int | None = None  # the last outbox id shown
    ops_done: bool = False
    events_done: bool = False


def _encode(p: _Position) -> str:
    op = [p.op_after[0].isoformat(), p.op_after[1]] if p.op_after else None
    raw = json.dumps([op, p.event_before, p.ops_done, p.events_done], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str | None) -> _Position:
    if not cursor:
        return _Position()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        op, event_before, ops_done, events_done = json.loads(raw)
        op_after = (datetime.fromisoformat(op[0]), int(op[1])) if op else None
        if op_after is not None and op_after[0].tzinfo is None:
            raise ValueError("naive")
        return _Position(
            op_after,
            int(event_before) if event_before is not None else None,
            bool(ops_done),
            bool(events_done),
        )
    except (ValueError, TypeError, IndexError, binascii.Error, json.JSONDecodeError):
        raise ValidationError("cursor is not a timeline cursor") from None


def _when(item: Operation | OutboxEvent) -> datetime:
    return item.at if isinstance(item, Operation) else item.created_at


async def timeline_page(
    store: Store, connection_id: str, cursor: str | None, *, limit: int = TIMELINE_PAGE
) -> TimelinePage:
    """One page of the timeline of ``connection_id`` (see the module docstring)."""
    pos = _decode(cursor)
    ops: list[Operation] = []
    if not pos.ops_done:
        page = await store.operations.page(
            LogQuery(connection_id=connection_id, after=pos.op_after, limit=limit)
        )
        ops = page.entries
        ops_more = page.after is not None
    else:
        ops_more = False
    events: list[OutboxEvent] = []
    events_more = False
    if not pos.events_done:
        events, next_events = await store.events.list_events(
            connection_id=connection_id,
            cursor=str(pos.event_before) if pos.event_before is not None else None,
            limit=limit,
        )
        events_more = next_events is not None
    merged: list[Operation | OutboxEvent] = [*ops, *events]
    merged.sort(key=_when, reverse=True)
    shown, rest = merged[:limit], merged[limit:]
    op_after, event_before = pos.op_after, pos.event_before
    entries = []
    for item in shown:
        if isinstance(item, Operation):
            op_after = (item.at, item.id)
            entries.append(
                TimelineEntry(
                    item.at, item.kind, item.outcome, item.cause, describe_operation(item)
                )
            )
        else:
            event_before = item.id
            delivered = ", ".join(f"{d.endpoint_id}: {d.state}" for d in item.deliveries)
            entries.append(
                TimelineEntry(
                    item.created_at,
                    "event",
                    item.status,
                    item.payload.get("cause"),
                    f"Event {item.event_type}" + (f" ({delivered})" if delivered else ""),
                )
            )
    ops_left = ops_more or any(isinstance(i, Operation) for i in rest)
    events_left = events_more or any(not isinstance(i, Operation) for i in rest)
    if not ops_left and not events_left:
        return TimelinePage(entries, None)
    nxt = _Position(op_after, event_before, ops_done=not ops_left, events_done=not events_left)
    return TimelinePage(entries, _encode(nxt))
