"""``GET /logs``: the operation log, newest first, filtered, with keyset cursor paging.

Entries come from the store's operation log (:class:`tokenkeep.store.operations.OperationLog`):
every refresh, proxied call, import, connect, diagnosis, status change, maintenance episode
and webhook delivery. Their ``detail`` never holds a token or secret (the writers'
contract). Proxied calls reach the store through this process's in-memory queue (an entry
is queued right after the call's response is sent); a read flushes the queue first, so this
gateway's calls show within moments, other gateways' within their flush interval
(``TOKENKEEP_LOG_FLUSH_SECONDS``).

Paging: ``next_cursor`` positions the next page (``null`` on the last); pass it back as
``cursor`` with the same filters. It is a keyset position ``(at, id)``, so entries written
meanwhile never shift a page. The SDK reads the ``{"data": [...]}`` shape
(``tokenkeep.client.Client.logs``).
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from tokenkeep.api.deps import GatewayDep
from tokenkeep.api.inputs import PRINTABLE, IsoDatetime
from tokenkeep.api.responses import error_responses
from tokenkeep.errors import ValidationError
from tokenkeep.store.operations import MAX_LOG_PAGE, LogQuery, parse_status
from tokenkeep.store.records import Operation

__all__ = ["LogEntryOut", "LogList", "decode_cursor", "encode_cursor", "router"]

router = APIRouter(tags=["logs"])

DEFAULT_LOG_PAGE = 100
# Printable text only: a NUL or control character in a filter is refused, never sent on.
_TEXT = PRINTABLE


class LogEntryOut(BaseModel):
    """One operation-log entry."""

    id: int
    at: datetime
    kind: str
    connection_id: str | None
    org_id: str | None
    outcome: str
    cause: str | None
    status_code: int | None
    duration_ms: float | None
    detail: dict[str, Any]


class LogList(BaseModel):
    """A page of entries, newest first; ``next_cursor`` is ``None`` on the last page."""

    data: list[LogEntryOut]
    next_cursor: str | None = None


def _entry(op: Operation) -> LogEntryOut:
    return LogEntryOut(
        id=op.id,
        at=op.at,
        kind=op.kind,
        connection_id=op.connection_id,
        org_id=op.org_id,
        outcome=op.outcome,
        cause=op.cause,
        status_code=op.status_code,
        duration_ms=op.duration_ms,
        detail=dict(op.detail),
    )


def encode_cursor(after: tuple[datetime, int]) -> str:
    """The opaque ``cursor`` of a keyset position."""
    at, row_id = after
    raw = f"{at.astimezone(UTC).isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """The keyset position of a ``cursor``; :class:`ValidationError` when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at_text, _, id_text = raw.partition("|")
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("naive")
        return at.astimezone(UTC), int(id_text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError(
            "'cursor' is not a cursor from a previous page: pass next_cursor back unchanged."
        ) from None


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(f"'{name}' is out of range once converted to UTC.") from None


def _status(value: str | None) -> tuple[int | None, int | None]:
    try:
        return parse_status(value)
    except ValueError as exc:
        raise ValidationError(f"'status' must be {exc}.") from None


Text = Query(min_length=1, max_length=100, pattern=_TEXT)


@router.get(
    "/logs",
    response_model=LogList,
    summary="The operation log, newest first",
    responses=error_responses(422),
)
async def list_logs(
    gateway: GatewayDep,
    *,
    connection_id: Annotated[str | None, Text] = None,
    org_id: Annotated[str | None, Query(min_length=1, max_length=64, pattern=_TEXT)] = None,
    kind: Annotated[str | None, Query(min_length=1, max_length=64, pattern=_TEXT)] = None,
    cause: Annotated[str | None, Query(min_length=1, max_length=50, pattern=_TEXT)] = None,
    outcome: Annotated[str | None, Query(min_length=1, max_length=30, pattern=_TEXT)] = None,
    status: Annotated[
        str | None, Query(max_length=3, description="an HTTP status (401) or a class (4xx)")
    ] = None,
    since: Annotated[
        IsoDatetime | None,
        Query(description="ISO-8601; entries at or after it (no offset means UTC)"),
    ] = None,
    until: Annotated[
        IsoDatetime | None, Query(description="ISO-8601; entries before it (no offset means UTC)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = DEFAULT_LOG_PAGE,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200, pattern=_TEXT)] = None,
) -> LogList:
    """Entries matching every given filter; 422 ``validation_error`` on a bad parameter."""
    status_code, status_class = _status(status)
    query = LogQuery(
        connection_id=connection_id,
        org_id=org_id,
        kind=kind,
        outcome=outcome,
        cause=cause,
        status_code=status_code,
        status_class=status_class,
        since=_utc(since, "since"),
        until=_utc(until, "until"),
        after=decode_cursor(cursor) if cursor is not None else None,
        limit=limit,
    )
    store = gateway.store
    await gateway.oplog.flush_all()
    page = await store.operations.page(query)
    return LogList(
        data=[_entry(op) for op in page.entries],
        next_cursor=encode_cursor(page.after) if page.after is not None else None,
    )
