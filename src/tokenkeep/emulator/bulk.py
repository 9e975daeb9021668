"""Bulk API 2.0 ingest: ``/jobs/ingest`` jobs fed with CSV, streamed, never held whole.

Flow (as on Salesforce): ``POST /jobs/ingest`` creates a job (state ``Open``);
``PUT /jobs/ingest/{id}/batches`` uploads CSV (201, empty body); ``PATCH /jobs/ingest/{id}``
with ``{"state":"UploadComplete"}`` closes it; the job is then processed and reads
``JobComplete`` (or ``Failed``); ``GET .../successfulResults|failedResults|
unprocessedrecords`` return CSV; ``DELETE`` removes the job; ``{"state":"Aborted"}`` aborts.

Uploads are parsed while they stream in (``request.stream()``): the CSV is cut at record
boundaries (a newline outside quotes) and handed to the C ``csv`` reader piece by piece,
so a 100 MB upload costs a few 64 KB buffers. Memory bound, documented: only the first
:data:`MAX_MATERIALIZED_ROWS` data rows of a job are kept and written to the org's
records on close; further rows are counted (``numberRecordsProcessed``) and reported as
successful without being stored, and they are absent from ``successfulResults``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokenkeep.emulator.context import RestContext
from tokenkeep.emulator.records import OrgRecords, RecordError, format_datetime

__all__ = ["MAX_MATERIALIZED_ROWS", "IngestJob", "handle"]

MAX_MATERIALIZED_ROWS = 10_000
_OPERATIONS = frozenset({"insert", "update", "upsert", "delete", "hardDelete"})
_DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
_JSON = "application/json;charset=UTF-8"


@dataclass(slots=True)
class IngestJob:
    """One Bulk API 2.0 ingest job of an org."""

    id: str
    object: str
    operation: str
    external_id_field: str | None
    line_ending: str
    column_delimiter: str
    created_by: str
    created_date: str
    api_version: str
    state: str = "Open"
    modstamp: str = ""
    header: list[str] | None = None
    rows: list[list[str]] = field(default_factory=list)
    rows_seen: int = 0
    processed: int = 0
    failed: int = 0
    error_message: str | None = None
    successes: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    failures: list[tuple[str, str, list[str]]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        """The job as ``POST``/``PATCH`` answer it."""
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": self.created_date,
            "systemModstamp": self.modstamp or self.created_date,
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "contentUrl": f"services/data/v{self.api_version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
        }
        if self.external_id_field:
            body["externalIdFieldName"] = self.external_id_field
        return body

    def status(self) -> dict[str, Any]:
        """The job as ``GET /jobs/ingest/{id}`` answers it (with counters)."""
        body = self.info()
        body.update(
            {
                "jobType": "V2Ingest",
                "numberRecordsProcessed": self.processed,
                "numberRecordsFailed": self.failed,
                "retries": 0,
                "totalProcessingTime": 0,
                "apiActiveProcessingTime": 0,
                "apexProcessingTime": 0,
            }
        )
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


def _json(status: int, payload: Any) -> Response:
    if status == 204:
        return Response(status_code=204)
    return Response(json.dumps(payload).encode(), status_code=status, media_type=_JSON)


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, [{"message": message, "errorCode": code}])


async def handle(request: Request, ctx: RestContext, path: str) -> Response:
    """Serve ``path`` (``/jobs/ingest...``, without a trailing slash)."""
    parts = path.split("/")[3:]  # after "", "jobs", "ingest"
    method = request.method
    store: OrgRecords = ctx.records
    jobs: dict[str, IngestJob] = store.ingest_jobs
    if not parts:
        if method == "POST":
            return _create(ctx, await _json_body(request))
        if method == "GET":
            listed = [j.info() for j in jobs.values()]
            return _json(200, {"done": True, "records": listed, "nextRecordsUrl": None})
        return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed.")
    job = jobs.get(parts[0])
    if job is None:
        return _error(404, "NOT_FOUND", "The requested resource does not exist")
    if len(parts) == 1:
        if method == "GET":
            return _json(200, job.status())
        if method == "PATCH":
            return _change_state(ctx, job, await _json_body(request))
        if method == "DELETE":
            if job.state in ("Open", "UploadComplete", "InProgress"):
                return _error(
                    400, "API_ERROR", "Job must be closed, aborted or complete to be deleted"
                )
            del jobs[job.id]
            return _json(204, None)
        return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed.")
    resource = parts[1]
    if resource == "batches" and len(parts) == 2:
        if method != "PUT":
            return _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed.")
        if job.state != "Open":
            return _error(409, "INVALIDJOBSTATE", f"Job {job.id} is not open for uploads")
        error = await _upload(request, job)
        if error is not None:
            return _error(400, "INVALIDBATCH", error)
        return Response(status_code=201)
    if len(parts) == 2 and method == "GET":
        if resource == "successfulResults":
            return _csv(
                job,
                ["sf__Id", "sf__Created"],
                [[i, str(c).lower(), *r] for i, c, r in job.successes],
            )
        if resource == "failedResults":
            return _csv(job, ["sf__Id", "sf__Error"], [[i, e, *r] for i, e, r in job.failures])
        if resource == "unprocessedrecords":
            return _csv(job, [], job.unprocessed)
    return _error(404, "NOT_FOUND", "The requested resource does not exist")


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return None


def _create(ctx: RestContext, body: Any) -> Response:
    store: OrgRecords = ctx.records
    if not isinstance(body, dict):
        return _error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    operation = body.get("operation")
    if operation not in _OPERATIONS:
        return _error(400, "INVALIDJOB", f"InvalidJob : Invalid operation: {operation}")
    schema = store.schema(str(body.get("object", "")))
    if schema is None:
        return _error(400, "INVALIDJOB", f"InvalidJob : Invalid object type: {body.get('object')}")
    content_type = body.get("contentType", "CSV")
    if content_type != "CSV":
        return _error(400, "INVALIDJOB", f"InvalidJob : Invalid contentType: {content_type}")
    line_ending = body.get("lineEnding", "LF")
    delimiter = body.get("columnDelimiter", "COMMA")
    if line_ending not in ("LF", "CRLF") or delimiter not in _DELIMITERS:
        return _error(400, "INVALIDJOB", "InvalidJob : Invalid lineEnding or columnDelimiter")
    external = body.get("externalIdFieldName")
    if operation == "upsert":
        if not external:
            return _error(400, "INVALIDJOB", "InvalidJob : External ID was blank for upsert")
        spec = schema.field(str(external))
        if spec is None or spec.name != "Id":
            return _error(
                400, "INVALIDJOB", f"InvalidJob : Field {external} is not an external id field"
            )
    now = format_datetime(ctx.clock.time())
    job = IngestJob(
        id=store.new_id("750"),
        object=schema.name,
        operation=operation,
        external_id_field=external,
        line_ending=line_ending,
        column_delimiter=delimiter,
        created_by=ctx.user_id,
        created_date=now,
        api_version=ctx.api_version,
    )
    store.ingest_jobs[job.id] = job
    return _json(200, job.info())


def _record_boundary(text: str) -> int:
    """Index just past the last newline that ends a CSV record (outside quotes); -1 if none.

    Quotes are balanced in a complete record (an embedded quote is written ``""``), so a
    newline ends a record when the number of quotes before it is even.
    """
    idx = text.rfind("\n")
    if idx < 0:
        return -1
    quotes = text.count('"', 0, idx)
    while idx >= 0:
        if quotes % 2 == 0:
            return idx + 1
        prev = text.rfind("\n", 0, idx)
        if prev < 0:
            return -1
        quotes -= text.count('"', prev, idx)
        idx = prev
    return -1


async def _upload(request: Request, job: IngestJob) -> str | None:
    """Stream and parse the CSV body; returns an error text for a broken upload."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    upload = _Upload(job, _DELIMITERS[job.column_delimiter])
    pending = ""
    # Salesforce accepts gzip-compressed uploads; inflate them as they stream in too.
    gzip = request.headers.get("content-encoding", "").lower() == "gzip"
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
    async for raw in request.stream():
        try:
            chunk = inflater.decompress(raw) if inflater is not None and raw else raw
        except zlib.error:
            return "InvalidBatch : The gzip stream is corrupt"
        if not chunk:
            continue
        pending += decoder.decode(chunk)
        cut = _record_boundary(pending)
        if cut > 0:
            complete, pending = pending[:cut], pending[cut:]
            upload.feed(complete)
    if inflater is not None:
        pending += decoder.decode(inflater.flush())
        if not inflater.eof:
            return "InvalidBatch : The gzip stream is truncated"
    pending += decoder.decode(b"", final=True)
    if pending.strip():
        upload.feed(pending)
    return upload.error or (None if upload.header_read else "InvalidBatch : Empty upload")


class _Upload:
    """Parser state of one PUT: the header line, then data rows (kept up to the cap)."""

    def __init__(self, job: IngestJob, delimiter: str) -> None:
        self.job = job
        self.delimiter = delimiter
        self.header_read = False
        self.error: str | None = None

    def feed(self, text: str) -> None:
        """Parse complete CSV records (``text`` ends at a record boundary)."""
        job = self.job
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter)
        if not self.header_read:
            for row in reader:
                if any(h.strip() for h in row):
                    header = [h.strip() for h in row]
                    # Each upload starts with a header; a later one must repeat the first.
                    if job.header is not None and header != job.header:
                        self.error = "InvalidBatch : The header differs from the first upload"
                    job.header = job.header or header
                    self.header_read = True
                    break
            else:
                return
        if self.error:
            return
        room = MAX_MATERIALIZED_ROWS - len(job.rows)
        if room > 0:
            for row in reader:
                if not row:
                    continue
                job.rows_seen += 1
                job.rows.append(row)
                room -= 1
                if room == 0:
                    break
        # Beyond the cap: count rows only (the C reader still honours quoted newlines).
        job.rows_seen += sum(1 for row in reader if row)


def _change_state(ctx: RestContext, job: IngestJob, body: Any) -> Response:
    state = body.get("state") if isinstance(body, dict) else None
    if state == "Aborted":
        if job.state in ("JobComplete", "Failed"):
            return _error(409, "INVALIDJOBSTATE", "Job is already complete")
        job.state = "Aborted"
        job.modstamp = format_datetime(ctx.clock.time())
        return _json(200, job.info())
    if state != "UploadComplete":
        return _error(400, "INVALIDJOBSTATE", f"Invalid state: {state}")
    if job.state != "Open":
        return _error(409, "INVALIDJOBSTATE", f"Job {job.id} is not open")
    job.state = "UploadComplete"
    job.modstamp = format_datetime(ctx.clock.time())
    answer = job.info()  # Salesforce answers before processing; clients then poll
    _process(ctx, job)
    return _json(200, answer)


def _process(ctx: RestContext, job: IngestJob) -> None:
    store: OrgRecords = ctx.records
    schema = store.schema(job.object)
    if schema is None:  # jobs are only created for known objects
        raise RuntimeError(f"unknown object {job.object}")
    header = job.header or []
    unknown = [h for h in header if schema.field(h) is None]
    if not header or unknown:
        job.state = "Failed"
        job.error_message = (
            f"InvalidBatch : Field name not found : {unknown[0]}"
            if unknown
            else "InvalidBatch : Failed to parse CSV header"
        )
        job.unprocessed = job.rows
        job.rows = []
        return
    specs = [schema.by_lower[h.lower()] for h in header]
    names = [spec.name for spec in specs]
    kinds = {spec.name: spec.type for spec in specs}
    for row in job.rows:
        values = {n: (v if v != "" else None) for n, v in zip(names, row, strict=False)}
        if any(v == "#N/A" for v in row):  # Bulk API: "#N/A" sets a field to null
            values = {n: (None if v == "#N/A" else v) for n, v in values.items()}
        try:
            typed = {k: _typed(kinds[k], v) for k, v in values.items()}
            rid, created = _apply(store, job, typed)
        except RecordError as exc:
            job.failed += 1
            fields = ",".join(exc.fields or [])
            job.failures.append(("", f"{exc.error_code}:{exc.message}:{fields} --", row))
            continue
        job.successes.append((rid, created, row))
    job.processed = job.rows_seen
    job.rows = []
    job.state = "JobComplete"
    job.modstamp = format_datetime(ctx.clock.time())


def _apply(store: OrgRecords, job: IngestJob, values: dict[str, Any]) -> tuple[str, bool]:
    name = job.object
    rid = values.pop("Id", None)
    if job.operation == "insert" or (job.operation == "upsert" and not rid):
        if rid:
            raise RecordError(400, "INVALID_FIELD_FOR_INSERT_UPDATE", "Id not allowed", ["Id"])
        return store.create(name, values)["Id"], True
    if not rid:
        raise RecordError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
    if job.operation in ("delete", "hardDelete"):
        store.delete(name, rid)
        return rid, False
    record = store.update(name, rid, values)
    return record["Id"], False


def _typed(kind: str, value: str | None) -> Any:
    """CSV text to the JSON value the store validates (CSV has no types)."""
    if value is None:
        return None
    if kind == "boolean":
        return value.strip().lower() in ("true", "1", "yes")
    if kind == "int":
        try:
            return int(value)
        except ValueError:
            return value
    if kind in ("double", "currency", "percent"):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _csv(job: IngestJob, prefix: list[str], rows: list[list[str]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n" if job.line_ending == "LF" else "\r\n")
    writer.writerow([*prefix, *(job.header or [])])
    writer.writerows(rows)
    return Response(out.getvalue().encode(), media_type="text/csv")
