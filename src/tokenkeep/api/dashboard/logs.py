"""``/dashboard/logs``: the operation log with filters; the first page polls for new rows.

The page's table body asks ``/dashboard/logs/rows`` (same filters) every few seconds with
htmx and swaps itself; a later page (``cursor``) stays still. Paging is the log's own
keyset (``OperationLog.page``), the cursor the one ``GET /logs`` uses.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from tokenkeep.api.dashboard.render import error_page, page, render_fragment
from tokenkeep.api.dashboard.session import Viewer, ViewerDep
from tokenkeep.api.dashboard.words import describe_operation
from tokenkeep.api.deps import get_gateway
from tokenkeep.api.logs import decode_cursor, encode_cursor
from tokenkeep.errors import ValidationError
from tokenkeep.store.operations import LogPage, LogQuery, parse_status
from tokenkeep.vocabulary import CAUSE_WORDS

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

KINDS = ("call", "refresh", "status", "diagnosis", "connect", "import", "webhook")
SINCE = {"15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}
LOG_PAGE = 50
POLL_SECONDS = 5
_Text = Query(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")


class _Filters:
    def __init__(self, **values: str | None) -> None:
        self.values = {k: (v or "").strip() for k, v in values.items()}

    def query(self, request: Request, cursor: str | None) -> LogQuery:
        v = self.values
        try:
            status_code, status_class = parse_status(v["status"] or None)
        except ValueError as exc:
            raise ValidationError(f"status must be {exc}.") from None
        since = None
        if v["since"] in SINCE:
            since = get_gateway(request).clock.now() - timedelta(seconds=SINCE[v["since"]])
        return LogQuery(
            connection_id=v["connection"] or None,
            org_id=v["org"] or None,
            kind=v["kind"] or None,
            cause=v["cause"] or None,
            outcome=v["outcome"] or None,
            status_code=status_code,
            status_class=status_class,
            since=since,
            after=decode_cursor(cursor) if cursor else None,
            limit=LOG_PAGE,
        )

    def encoded(self, **more: str) -> str:
        return urlencode({**{k: v for k, v in self.values.items() if v}, **more})


def log_filters(
    *,
    connection: Annotated[str | None, _Text] = None,
    org: Annotated[str | None, _Text] = None,
    kind: Annotated[str | None, _Text] = None,
    cause: Annotated[str | None, _Text] = None,
    outcome: Annotated[str | None, _Text] = None,
    status: Annotated[str | None, Query(max_length=3)] = None,
    since: Annotated[str | None, Query(max_length=4)] = None,
) -> _Filters:
    """The filters of the query string (a dependency of both routes)."""
    return _Filters(
        connection=connection,
        org=org,
        kind=kind,
        cause=cause,
        outcome=outcome,
        status=status,
        since=since,
    )


FiltersDep = Annotated[_Filters, Depends(log_filters)]


async def _read(request: Request, filters: _Filters, cursor: str | None) -> LogPage:
    gateway = get_gateway(request)
    query = filters.query(request, cursor)
    await gateway.oplog.flush_all()
    return await gateway.store.operations.page(query)


def _rows(request: Request, viewer: Viewer, log: LogPage) -> HTMLResponse:
    return render_fragment(
        request, "_log_rows.html", viewer, entries=log.entries, describe=describe_operation
    )


@router.get("/logs")
async def logs_page(
    request: Request,
    viewer: ViewerDep,
    filters: FiltersDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """The log page (filters, newest first, live on the first page)."""
    try:
        log = await _read(request, filters, cursor or None)
    except ValidationError as exc:
        return error_page(request, 400, "Bad request", exc.message)
    path = request.url.path
    return await page(
        request,
        "logs.html",
        viewer,
        active="logs",
        title="Logs",
        entries=log.entries,
        describe=describe_operation,
        filters=filters.values,
        kinds=KINDS,
        causes=sorted(CAUSE_WORDS | {"unknown"}),
        since_choices=list(SINCE),
        live=not cursor,
        poll_seconds=POLL_SECONDS,
        rows_url=f"{path}/rows?{filters.encoded()}",
        next_url=f"{path}?{filters.encoded(cursor=encode_cursor(log.after))}"
        if log.after is not None
        else None,
        first_url=f"{path}?{filters.encoded()}" if cursor else None,
    )


@router.get("/logs/rows")
async def log_rows(
    request: Request,
    viewer: ViewerDep,
    filters: FiltersDep,
) -> HTMLResponse:
    """The first page's rows (the htmx poll)."""
    try:
        log = await _read(request, filters, None)
    except ValidationError as exc:
        return error_page(request, 400, "Bad request", exc.message)
    return _rows(request, viewer, log)
