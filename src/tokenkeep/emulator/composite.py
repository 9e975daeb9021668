"""``/composite`` (sub-requests with ``@{ref.path}`` references) and ``/composite/sobjects``.

Sub-requests go through :func:`tokenkeep.emulator.rest.dispatch`, so each behaves like the
separate call it stands for (including the maintenance refusal of writes). ``allOrNone``
uses the store's journal: on the first failure every write of the request is undone and
the other sub-requests answer PROCESSING_HALTED, as Salesforce does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tokenkeep.emulator import rest
from tokenkeep.emulator.context import RestContext
from tokenkeep.emulator.records import OrgRecords, RecordError, id15_to_18, not_found

__all__ = ["route"]

MAX_SUBREQUESTS = 25
MAX_COLLECTION = 200
_REF = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_ROLLED_BACK = (
    "The transaction was rolled back since another operation in the same transaction failed."
)
_WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})

Result = tuple[int, Any, dict[str, str] | None]


def route(
    ctx: RestContext, method: str, parts: list[str], params: Mapping[str, str], body: Any
) -> Result:
    """Dispatch ``/composite`` and ``/composite/sobjects[/{type}]``."""
    if not parts:
        if method != "POST":
            return rest.method_not_allowed(method, "POST")
        return _composite(ctx, body)
    if parts[0] == "sobjects":
        return _collections(ctx, method, parts[1:], params, body)
    raise not_found()


class _Unresolved(Exception):
    def __init__(self, expression: str, ref_id: str) -> None:
        super().__init__(expression)
        self.expression = expression
        self.ref_id = ref_id


def _resolve(value: Any, results: dict[str, Any]) -> Any:
    """Replace every ``@{ref.path}`` in strings of ``value`` (recursively)."""
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            ref_id, path = m.group(1), m.group(2)
            if ref_id not in results:
                raise _Unresolved(m.group(0)[2:-1], ref_id)
            current = results[ref_id]
            for step in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", path):
                key, index = step
                try:
                    current = current[key] if key else current[int(index)]
                except (KeyError, IndexError, TypeError):
                    raise _Unresolved(m.group(0)[2:-1], ref_id) from None
            return str(current)

        return _REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _resolve(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, results) for v in value]
    return value


def _composite(ctx: RestContext, body: Any) -> Result:
    requests = body.get("compositeRequest") if isinstance(body, dict) else None
    if not isinstance(requests, list) or not requests:
        return (
            400,
            rest.error_body("JSON_PARSER_ERROR", "compositeRequest must be a non-empty list"),
            None,
        )
    if len(requests) > MAX_SUBREQUESTS:
        return (
            400,
            rest.error_body(
                "LIMIT_EXCEEDED", f"Composite requests may have at most {MAX_SUBREQUESTS} items"
            ),
            None,
        )
    all_or_none = bool(body.get("allOrNone", False))
    store: OrgRecords = ctx.records
    results: dict[str, Any] = {}
    responses: list[dict[str, Any]] = []
    failed_at: int | None = None
    store.begin()
    try:
        for index, sub in enumerate(requests):
            ref_id = str(sub.get("referenceId", f"ref{index}"))
            status, payload, headers = _one(ctx, sub, results)
            responses.append(
                {
                    "body": payload,
                    "httpHeaders": headers or {},
                    "httpStatusCode": status,
                    "referenceId": ref_id,
                }
            )
            if status < 300:
                results[ref_id] = payload
            elif all_or_none:
                failed_at = index
                break
    finally:
        if failed_at is not None:
            store.rollback()
        else:
            store.commit()
    if failed_at is not None:
        halted = rest.error_body("PROCESSING_HALTED", _ROLLED_BACK)
        for index, sub in enumerate(requests):
            if index == failed_at:
                continue
            entry = {
                "body": halted,
                "httpHeaders": {},
                "httpStatusCode": 400,
                "referenceId": str(sub.get("referenceId", f"ref{index}")),
            }
            if index < failed_at:
                responses[index] = entry
            else:
                responses.append(entry)
    return 200, {"compositeResponse": responses}, None


def _one(ctx: RestContext, sub: Any, results: dict[str, Any]) -> Result:
    if not isinstance(sub, dict) or "url" not in sub or "method" not in sub:
        return 400, rest.error_body("JSON_PARSER_ERROR", "method and url are required"), None
    method = str(sub["method"]).upper()
    try:
        url = _resolve(str(sub["url"]), results)
        body = _resolve(sub.get("body"), results)
    except _Unresolved as exc:
        message = (
            f"Invalid reference specified. No value for {exc.expression} found in "
            f"{exc.ref_id}. Provided referenceId ('{exc.expression}') is not available."
        )
        return 400, rest.error_body("PROCESSING_HALTED", message), None
    split = rest.split_url(url, ctx.api_version)
    if split is None:
        return 400, rest.error_body("INVALID_URL", f"Invalid URL: {url}"), None
    _, path, params = split
    if path.startswith("/jobs") or path.startswith("/composite"):
        return 400, rest.error_body("INVALID_URL", f"Not supported in composite: {url}"), None
    if ctx.read_only and method in _WRITES:
        return (
            ctx.maintenance_status_code,
            rest.error_body(
                "INSERT_UPDATE_DELETE_NOT_ALLOWED_DURING_MAINTENANCE", rest.MAINTENANCE_MESSAGE
            ),
            None,
        )
    return rest.dispatch(ctx, method, path, params=params, body=body)


# -- sObject collections -----------------------------------------------------------------


def _failure(exc: RecordError) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [
            {"statusCode": exc.error_code, "message": exc.message, "fields": exc.fields or []}
        ],
    }


def _collections(
    ctx: RestContext, method: str, parts: list[str], params: Mapping[str, str], body: Any
) -> Result:
    store: OrgRecords = ctx.records
    if method == "GET" or (method == "POST" and len(parts) == 1):
        # Retrieve: GET ?ids=&fields=, or POST {"ids": [...], "fields": [...]} (jsforce uses
        # the POST form for retrieve() with several ids).
        if len(parts) != 1:
            raise not_found()
        schema = store.schema(parts[0])
        if schema is None:
            raise not_found()
        if method == "POST":
            if not isinstance(body, dict) or not isinstance(body.get("ids"), list):
                return 400, rest.error_body("JSON_PARSER_ERROR", "ids must be a list"), None
            ids = [str(i) for i in body["ids"]]
            wanted = body.get("fields")
            fields = ",".join(map(str, wanted)) if isinstance(wanted, list) else None
        else:
            ids = [i for i in (params.get("ids") or "").split(",") if i]
            fields = params.get("fields")
        out: list[Any] = []
        for rid in ids:
            record = store.get(schema.name, rid)
            out.append(
                rest.render_record(record, schema.name, ctx.api_version, fields) if record else None
            )
        return 200, out, None
    if parts:
        raise not_found()
    items: list[tuple[str | None, Any]]
    if method == "DELETE":
        ids = [i for i in (params.get("ids") or "").split(",") if i]
        all_or_none = (params.get("allOrNone") or "false").lower() == "true"
        items = [(rid, None) for rid in ids]
    elif method in ("POST", "PATCH"):
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return 400, rest.error_body("JSON_PARSER_ERROR", "records must be a list"), None
        all_or_none = bool(body.get("allOrNone", False))
        items = [(None, r) for r in body["records"]]
    else:
        return rest.method_not_allowed(method, "GET,POST,PATCH,DELETE")
    if len(items) > MAX_COLLECTION:
        return (
            400,
            rest.error_body(
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records "
                "into this call",
            ),
            None,
        )
    results: list[dict[str, Any]] = []
    store.begin()
    failed = False
    try:
        for item_id, record in items:
            try:
                results.append(_collection_item(store, method, item_id, record))
            except RecordError as exc:
                failed = True
                results.append({"id": item_id, **_failure(exc)} if item_id else _failure(exc))
    finally:
        if failed and all_or_none:
            store.rollback()
        else:
            store.commit()
    if failed and all_or_none:
        rolled = {
            "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "message": "Record rolled back because not all records were valid and the "
            "request was using AllOrNone header",
            "fields": [],
        }
        results = [
            r if not r["success"] else {"id": r.get("id"), "success": False, "errors": [rolled]}
            for r in results
        ]
    return 200, results, None


def _collection_item(
    store: OrgRecords, method: str, rid: str | None, record: Any
) -> dict[str, Any]:
    if method == "DELETE":
        schema = store.schema_for_id(rid or "")
        if schema is None:
            raise RecordError(400, "MALFORMED_ID", f"malformed id {rid}")
        store.delete(schema.name, rid or "")
        return {"id": store_id(rid or ""), "success": True, "errors": []}
    if not isinstance(record, dict):
        raise RecordError(400, "JSON_PARSER_ERROR", "each record must be an object")
    attrs = record.get("attributes") or {}
    values = {k: v for k, v in record.items() if k != "attributes"}
    if method == "POST":
        schema = store.schema(str(attrs.get("type", "")))
        if schema is None:
            raise RecordError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        created = store.create(schema.name, values)
        return {"id": created["Id"], "success": True, "errors": []}
    rid = str(values.pop("Id", values.pop("id", "")) or "")
    schema = store.schema_for_id(rid) if rid else None
    if schema is None:
        raise RecordError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
    updated = store.update(schema.name, rid, values)
    return {"id": updated["Id"], "success": True, "errors": []}


def store_id(rid: str) -> str:
    """The 18-character form of a 15- or 18-character id."""
    return id15_to_18(rid) if len(rid) == 15 else rid
