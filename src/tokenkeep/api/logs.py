"""``GET /logs``: the operation log (refreshes, connects, learned expiries), newest first.

Entries come from the store's operation log (:class:`tokenkeep.store.operations.OperationLog`);
their ``detail`` never holds a token or secret (the writers' contract). The SDK reads the
``{"data": [...]}`` shape (``tokenkeep.client.Client.logs``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from tokenkeep.api.deps import StoreDep
from tokenkeep.store.operations import MAX_LOG_PAGE
from tokenkeep.store.records import Operation

__all__ = ["LogEntryOut", "LogList", "router"]

router = APIRouter(tags=["logs"])

DEFAULT_LOG_PAGE = 100


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
    """A page of entries, newest first."""

    data: list[LogEntryOut]


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


@router.get("/logs", response_model=LogList, summary="The operation log, newest first")
async def list_logs(
    store: StoreDep,
    *,
    connection_id: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    org_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    kind: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    since: Annotated[
        datetime | None,
        Query(description="ISO-8601; entries at or after it (no offset means UTC)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = DEFAULT_LOG_PAGE,
) -> LogList:
    """Entries matching every given filter; 422 ``validation_error`` on a bad parameter."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    entries = await store.operations.list(
        connection_id=connection_id, org_id=org_id, kind=kind, since=since, limit=limit
    )
    return LogList(data=[_entry(op) for op in entries])
