"""The data API's front door: everything Salesforce checks before a REST call runs.

Order (each failure is the exact response shared/SALESFORCE.md lists): login host →
URL_NOT_RESET; versions list → no auth; token present, not revoked, not idle too long;
token of this host's org; IP lock; API Client Control; daily API limit; injected faults.
Then the call is counted, the session's "last active" recorded, and the data layer
(``tokenkeep.emulator.rest.handle``) answers. This path runs on every data call: dict
lookups only.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tokenkeep.emulator.context import RestContext
from tokenkeep.emulator.faults import Fault, Faults
from tokenkeep.emulator.http import Call, ConnectionDrop, bearer_token, json_response, sf_error
from tokenkeep.emulator.state import EmulatorState, HostBinding, Org

__all__ = ["handle_data"]

_VERSIONED = re.compile(r"^/services/data/v(\d{2,3}\.\d)(/.*)?$")
_INVALID = "Session expired or invalid"
_NOT_FOR_REST = "This session is not valid for use with the REST API"
_SECONDS_PER_DAY = 86_400

_rest: ModuleType | None = None
_rest_loaded = False


def _rest_module() -> ModuleType | None:
    """The data layer, imported on first use; None while it does not exist yet."""
    global _rest, _rest_loaded
    if not _rest_loaded:
        try:
            _rest = importlib.import_module("tokenkeep.emulator.rest")
        except ModuleNotFoundError as exc:
            if exc.name != "tokenkeep.emulator.rest":
                raise
            _rest = None
        _rest_loaded = True
    return _rest


def _fallback(ctx: RestContext | None) -> Response:
    """Answers ``/limits`` (and the versions list) when the data layer is not installed."""
    if ctx is None:
        return json_response(
            [{"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"}]
        )
    if ctx.rest_path.rstrip("/") == "/limits":
        return json_response(
            {"DailyApiRequests": {"Max": ctx.api_limit, "Remaining": ctx.api_limit - ctx.api_usage}}
        )
    return sf_error(404, "NOT_FOUND", "The requested resource does not exist")


async def _dispatch(request: Request, ctx: RestContext | None) -> Response:
    rest = _rest_module()
    if rest is None:
        return _fallback(ctx)
    handler: Callable[[Request, Any], Awaitable[Response]] = rest.handle
    return await handler(request, ctx)


def _limit_header(response: Response, org: Org) -> Response:
    response.headers["Sforce-Limit-Info"] = f"api-usage={org.api_usage}/{org.daily_api_limit}"
    return response


def _fault_answer(fault: Fault, org: Org) -> Response:
    """An injected 5xx or limit, with ``Retry-After`` when the fault carries one."""
    if fault.kind == "limit":
        response = sf_error(fault.status, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        response = _limit_header(response, org)
    else:
        response = sf_error(
            fault.status, "SERVER_UNAVAILABLE", "Server temporarily unavailable (injected)"
        )
    if fault.retry_after_seconds is not None:
        response.headers["Retry-After"] = str(fault.retry_after_seconds)
    return response


async def handle_data(
    state: EmulatorState,
    faults: Faults,
    request: Request,
    binding: HostBinding,
    call: Call,
) -> Response:
    """Authenticate and meter one ``/services/data`` call, then hand it to the data layer."""
    if binding.kind == "login":
        return sf_error(
            400,
            "URL_NOT_RESET",
            "Destination URL not reset. The URL returned from login must be set",
        )
    path = request.url.path
    if path in ("/services/data", "/services/data/") and request.method == "GET":
        return await _dispatch(request, None)
    org = binding.org
    if org is None:  # a host this org moved away from
        return sf_error(401, "INVALID_SESSION_ID", _INVALID)
    call.org_id = org.org_id
    token = bearer_token(request)
    at = state.live(token) if token else None
    if at is None or at.family.user.org_id != org.org_id:
        return _limit_header(sf_error(401, "INVALID_SESSION_ID", _INVALID), org)
    client_ip = request.client.host if request.client else ""
    if org.lock_sessions_to_ip and client_ip != at.address:
        return _limit_header(sf_error(401, "INVALID_SESSION_ID", _INVALID), org)
    if org.api_client_control and at.family.client_id not in org.allowed_client_ids:
        return _limit_header(sf_error(401, "INVALID_SESSION_ID", _NOT_FOR_REST), org)
    day = int(state.clock.time() // _SECONDS_PER_DAY)
    if day != org.usage_day:  # the daily allowance starts again each (emulator) day
        org.usage_day = day
        org.api_usage = 0
    if org.api_usage >= org.daily_api_limit:
        return _limit_header(
            sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), org
        )
    fault = faults.take("data", org.org_id)
    if fault is not None:
        if fault.latency_seconds:
            await asyncio.sleep(fault.latency_seconds)
        if fault.kind == "drop":
            raise ConnectionDrop
        if fault.kind in ("error", "limit"):
            return _fault_answer(fault, org)
    org.api_usage += 1
    state.touch(at)
    match = _VERSIONED.match(path)
    if match is None:
        return _limit_header(
            sf_error(404, "NOT_FOUND", "The requested resource does not exist"), org
        )
    user = at.family.user
    ctx = RestContext(
        org_id=org.org_id,
        org_id15=org.org_id15,
        instance_url=org.instance_url,
        api_version=match.group(1),
        rest_path=match.group(2) or "",
        user_id=user.user_id,
        username=user.username,
        read_only=org.read_only,
        maintenance_status_code=org.maintenance_status_code,
        records=org.records,
        clock=state.clock,
        api_usage=org.api_usage,
        api_limit=org.daily_api_limit,
        client_id=at.family.client_id,
        access_token=at.token,
    )
    return _limit_header(await _dispatch(request, ctx), org)
