"""The emulator's REST data API: everything under ``/services/data/vNN.N`` once authenticated.

The emulator core authenticates, counts and faults the call, then awaits
:func:`handle`. Routing here is a dispatch on the path segments (no framework router: a
simple GET is a few dict lookups). Resource logic lives in :func:`dispatch`, a plain
function of (method, path, query, body) that :mod:`composite` sub-requests reuse, so a
composite request behaves exactly like the separate calls it stands for.

Salesforce shapes: errors are JSON arrays ``[{"message", "errorCode"[, "fields"]}]``.
"""

from __future__ import annotations

import functools
import gzip
import json
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.requests import Request
from starlette.responses import Response

from tokenkeep.emulator import bulk
from tokenkeep.emulator.context import RestContext
from tokenkeep.emulator.records import (
    OrgRecords,
    RecordError,
    format_datetime,
    id15_to_18,
    not_found,
)
from tokenkeep.emulator.soql import BoundQuery, SoqlError, bind

__all__ = [
    "MAINTENANCE_MESSAGE",
    "MAX_VERSION",
    "MIN_VERSION",
    "dispatch",
    "error_body",
    "handle",
    "json_response",
    "version_label",
    "versions_response",
]

MIN_VERSION = 31
MAX_VERSION = 62
MAINTENANCE_MESSAGE = (
    "Updates can't be made during maintenance. Try again when maintenance is complete."
)
MAX_BATCH = 2000
MIN_BATCH = 200
# Query cursors kept per org; the oldest is dropped beyond this (Salesforce also expires
# locators, with INVALID_QUERY_LOCATOR).
MAX_CURSORS = 200
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_JSON = "application/json;charset=UTF-8"


def version_label(major: int) -> str:
    """Salesforce's release name of API version ``major`` (32 is "Winter '15")."""
    offset = major - 32
    season = ("Winter", "Spring", "Summer")[offset % 3]
    return f"{season} '{15 + offset // 3:02d}"


_VERSIONS_BODY = json.dumps(
    [
        {
            "label": version_label(v),
            "url": f"/services/data/v{v}.0",
            "version": f"{v}.0",
        }
        for v in range(MIN_VERSION, MAX_VERSION + 1)
    ]
).encode()


def versions_response() -> Response:
    """``GET /services/data/``: every served version (no auth, not counted)."""
    return Response(_VERSIONS_BODY, media_type=_JSON)


def json_response(status: int, payload: Any) -> Response:
    """A JSON response as Salesforce sends it (204 has no body)."""
    if status == 204 or payload is None:
        return Response(status_code=status)
    return Response(
        json.dumps(payload, separators=(",", ":")).encode(), status_code=status, media_type=_JSON
    )


def error_body(error_code: str, message: str, fields: list[str] | None = None) -> list[Any]:
    """Salesforce's error array with one element."""
    item: dict[str, Any] = {"message": message, "errorCode": error_code}
    if fields is not None:
        item["fields"] = fields
    return [item]


def _served(version: str) -> bool:
    major, _, minor = version.partition(".")
    return major.isdigit() and minor == "0" and MIN_VERSION <= int(major) <= MAX_VERSION


async def handle(request: Request, ctx: RestContext | None) -> Response:
    """Answer one authenticated data call (``ctx`` None: the unauthenticated versions list)."""
    if ctx is None:
        return versions_response()
    method = request.method
    ctx.records.act_as(ctx.user_id, ctx.username)
    if not _served(ctx.api_version):
        return json_response(404, error_body("NOT_FOUND", "The requested resource does not exist"))
    path = ctx.rest_path.rstrip("/")
    if path == "/jobs/ingest" or path.startswith("/jobs/ingest/"):
        if ctx.read_only and method in _WRITE_METHODS:
            return _maintenance(ctx)
        return await bulk.handle(request, ctx, path)
    if ctx.read_only and method in _WRITE_METHODS and not _is_read_post(path):
        return _maintenance(ctx)
    body: Any = None
    if method in ("POST", "PATCH", "PUT"):
        raw = await request.body()
        if raw and request.headers.get("content-encoding", "").lower() == "gzip":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                return json_response(
                    400, error_body("JSON_PARSER_ERROR", "The gzip request body is corrupt")
                )
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as exc:
                return json_response(
                    400, error_body("JSON_PARSER_ERROR", f"Unexpected character: {exc}")
                )
    status, payload, headers = dispatch(
        ctx,
        "GET" if method == "HEAD" else method,
        path,
        params=request.query_params,
        body=body,
        query_options=request.headers.get("sforce-query-options"),
    )
    response = json_response(status, payload)
    if headers:
        response.headers.update(headers)
    if method == "HEAD":  # the GET's status and headers, no body
        response.body = b""
        response.headers["content-length"] = "0"
    return response


def _is_read_post(path: str) -> bool:
    # A composite request is a POST but may hold only reads; its writes are refused one by
    # one inside (the same answer a separate call would get). POST
    # /composite/sobjects/{type} is a retrieve.
    return path == "/composite" or path.startswith("/composite/sobjects/")


def _maintenance(ctx: RestContext) -> Response:
    return json_response(
        ctx.maintenance_status_code,
        error_body("INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE", MAINTENANCE_MESSAGE),
    )


Result = tuple[int, Any, dict[str, str] | None]


def dispatch(
    ctx: RestContext,
    method: str,
    path: str,
    *,
    params: Mapping[str, str],
    body: Any,
    query_options: str | None = None,
) -> Result:
    """Route one resource call; returns (status, JSON payload or None, extra headers)."""
    try:
        return _route(ctx, method, path, params=params, body=body, query_options=query_options)
    except RecordError as exc:
        return exc.status, [exc.to_json()], None
    except SoqlError as exc:
        return 400, error_body(exc.error_code, exc.message), None


def _route(
    ctx: RestContext,
    method: str,
    path: str,
    *,
    params: Mapping[str, str],
    body: Any,
    query_options: str | None,
) -> Result:
    parts = path.split("/")[1:] if path else []
    head = parts[0] if parts else ""
    if head == "sobjects":
        return _sobjects(ctx, method, parts[1:], params, body)
    if head in ("query", "queryAll"):
        if method != "GET":
            return method_not_allowed(method, "GET")
        if len(parts) == 2:
            return _query_more(ctx, parts[1])
        if len(parts) == 1:
            return _query(ctx, params.get("q"), head == "queryAll", query_options)
    elif head == "limits" and len(parts) == 1:
        return 200, _limits(ctx), None
    elif head == "composite":
        from tokenkeep.emulator import composite

        return composite.route(ctx, method, parts[1:], params, body)
    elif head == "":
        return 200, _resources(ctx.api_version), None
    raise not_found()


def method_not_allowed(method: str, allowed: str) -> Result:
    return (
        405,
        error_body(
            "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}"
        ),
        None,
    )


def _resources(version: str) -> dict[str, str]:
    base = f"/services/data/v{version}"
    names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs", "search", "recent")
    return {name: f"{base}/{name}" for name in names}


def _limits(ctx: RestContext) -> dict[str, Any]:
    def pair(maximum: int, remaining: int) -> dict[str, int]:
        return {"Max": maximum, "Remaining": remaining}

    return {
        "ConcurrentAsyncGetReportInstances": pair(200, 200),
        "ConcurrentSyncReportRuns": pair(20, 20),
        "DailyApiRequests": pair(ctx.api_limit, max(0, ctx.api_limit - ctx.api_usage)),
        "DailyAsyncApexExecutions": pair(250000, 250000),
        "DailyBulkApiBatches": pair(15000, 15000),
        "DailyBulkV2QueryFileStorageMB": pair(976562, 976562),
        "DailyBulkV2QueryJobs": pair(10000, 10000),
        "DataStorageMB": pair(5, 5),
        "FileStorageMB": pair(20, 20),
        "HourlyODataCallout": pair(10000, 10000),
        "SingleEmail": pair(5000, 5000),
    }


# -- sObjects -----------------------------------------------------------------------------


def _sobjects(
    ctx: RestContext, method: str, parts: list[str], params: Mapping[str, str], body: Any
) -> Result:
    store: OrgRecords = ctx.records
    version = ctx.api_version
    if not parts:
        if method != "GET":
            return method_not_allowed(method, "GET,HEAD")
        return (
            200,
            {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [s.summary(version) for s in store.schemas()],
            },
            None,
        )
    schema = store.schema(parts[0])
    if schema is None:
        raise RecordError(404, "NOT_FOUND", "The requested resource does not exist")
    name = schema.name
    if len(parts) == 1:
        if method == "POST":
            values = _record_body(body)
            record = store.create(name, values)
            rid = record["Id"]
            location = f"/services/data/v{version}/sobjects/{name}/{rid}"
            return 201, {"id": rid, "success": True, "errors": []}, {"Location": location}
        if method != "GET":
            return method_not_allowed(method, "GET,HEAD,POST")
        recent = [
            {
                "attributes": {
                    "type": name,
                    "url": f"/services/data/v{version}/sobjects/{name}/{r['Id']}",
                },
                "Id": r["Id"],
                "Name": r.get("Name"),
            }
            for r in store.recent(name)
        ]
        return 200, {"objectDescribe": schema.summary(version), "recentItems": recent}, None
    if len(parts) == 2 and parts[1] in ("updated", "deleted"):
        if method != "GET":
            return method_not_allowed(method, "GET,HEAD")
        return 200, _replication(store, name, parts[1], params), None
    if len(parts) == 2 and parts[1] == "describe":
        if method != "GET":
            return method_not_allowed(method, "GET,HEAD")
        return 200, _describe(name, version), None
    if len(parts) == 2:
        rid = parts[1]
        if method == "GET":
            found = store.get(name, rid)
            if found is None:
                raise not_found()
            return 200, render_record(found, name, version, params.get("fields")), None
        if method == "PATCH":
            store.update(name, rid, _record_body(body))
            return 204, None, None
        if method == "DELETE":
            store.delete(name, rid)
            return 204, None, None
        return method_not_allowed(method, "GET,PATCH,DELETE,HEAD")
    raise not_found()


def _replication(
    store: OrgRecords, name: str, kind: str, params: Mapping[str, str]
) -> dict[str, Any]:
    """``/sobjects/{type}/updated|deleted?start=&end=`` (ISO 8601 with an offset)."""
    bounds = []
    for key in ("start", "end"):
        raw = params.get(key)
        try:
            stamp = datetime.fromisoformat(raw or "")
        except ValueError:
            raise RecordError(
                400, "INVALID_REPLICATION_DATE", f"{key} must be an ISO 8601 date-time"
            ) from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        bounds.append(format_datetime(stamp.timestamp()))
    start, end = bounds
    if kind == "updated":
        ids = [r["Id"] for r in store.rows(name) if start <= r.get("SystemModstamp", "") <= end]
        return {"ids": ids, "latestDateCovered": end}
    deleted = [
        {"id": r["Id"], "deletedDate": r["SystemModstamp"]}
        for r in store.rows(name, include_deleted=True)
        if r.get("IsDeleted") and start <= r["SystemModstamp"] <= end
    ]
    return {"deletedRecords": deleted, "earliestDateAvailable": start, "latestDateCovered": end}


@functools.lru_cache(maxsize=256)
def _describe_json(name: str, version: str) -> str:
    schema = OrgRecords.schema(name)
    return json.dumps(schema.describe(version) if schema else None)


def _describe(name: str, version: str) -> Any:
    # Schemas never change at run time: build the (large) describe once per version and
    # hand out a fresh copy (composite callers may keep and mutate it).
    return json.loads(_describe_json(name, version))


def _record_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RecordError(
            400, "JSON_PARSER_ERROR", "The request body must be a JSON object of field values"
        )
    return body


def render_record(
    record: dict[str, Any], name: str, version: str, fields: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": {
            "type": name,
            "url": f"/services/data/v{version}/sobjects/{name}/{record['Id']}",
        }
    }
    if not fields:
        out.update(record)
        return out
    schema = OrgRecords.schema(name)
    if schema is None:
        raise not_found()
    for raw in fields.split(","):
        spec = schema.field(raw.strip())
        if spec is None:
            raise RecordError(
                400,
                "INVALID_FIELD",
                f"No such column '{raw.strip()}' on entity '{name}'. If you are attempting to "
                "use a custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        out[spec.name] = record.get(spec.name)
    return out


# -- query --------------------------------------------------------------------------------


def _batch_size(options: str | None) -> int:
    """``Sforce-Query-Options: batchSize=N`` (200..2000; Salesforce may round it)."""
    if options:
        for part in options.split(","):
            key, _, value = part.partition("=")
            if key.strip().lower() == "batchsize" and value.strip().isdigit():
                return max(MIN_BATCH, min(MAX_BATCH, int(value.strip())))
    return MAX_BATCH


def _query(ctx: RestContext, q: str | None, include_deleted: bool, options: str | None) -> Result:
    if q is None:
        return 400, error_body("MALFORMED_QUERY", "A query string has to be specified"), None
    store: OrgRecords = ctx.records
    bound = bind(q, store)
    query = bound.query
    if query.count_only:
        rows = bound.rows(include_deleted)
        return 200, {"totalSize": len(rows), "done": True, "records": []}, None
    if bound.is_aggregate:
        records = bound.aggregate_records(include_deleted)
        return 200, {"totalSize": len(records), "done": True, "records": records}, None
    rows = bound.rows(include_deleted)
    return 200, _page(ctx, bound, rows, 0, _batch_size(options)), None


def _page(
    ctx: RestContext,
    bound: BoundQuery,
    rows: list[dict[str, Any]],
    start: int,
    size: int,
    *,
    locator: str | None = None,
) -> dict[str, Any]:
    version = ctx.api_version
    end = start + size
    batch = [bound.project(r, version) for r in rows[start:end]]
    page: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
    if end < len(rows):
        if locator is None:  # one locator for all pages of a query, as on Salesforce
            store: OrgRecords = ctx.records
            locator = store.new_id("01g")
            cursors = store.cursors
            cursors[locator] = (bound, rows, size)
            if len(cursors) > MAX_CURSORS:
                del cursors[next(iter(cursors))]
        page["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
    page["records"] = batch
    return page


def _query_more(ctx: RestContext, token: str) -> Result:
    store: OrgRecords = ctx.records
    locator, _, offset = token.partition("-")
    if len(locator) == 15:
        locator = id15_to_18(locator)
    cursor = store.cursors.get(locator)
    if cursor is None or not offset.isdigit():
        return 400, error_body("INVALID_QUERY_LOCATOR", "invalid query locator"), None
    bound, rows, size = cursor
    return 200, _page(ctx, bound, rows, int(offset), size, locator=locator), None


def split_url(url: str, version: str) -> tuple[str, str, dict[str, str]] | None:
    """``/services/data/v60.0/sobjects/Account?x=1`` → ("60.0", "/sobjects/Account", params)."""
    parts = urlsplit(url)
    prefix = "/services/data/v"
    if not parts.path.startswith(prefix):
        return None
    rest = parts.path[len(prefix) :]
    ver, slash, tail = rest.partition("/")
    params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return ver or version, (slash + tail).rstrip("/"), params
