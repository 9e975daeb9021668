"""The admin API's HTTP routes under ``/_emulator/`` (JSON in, JSON out)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from tokenkeep.emulator.admin import Admin, AdminError, bad_request

__all__ = ["route"]

_bad = bad_request


async def route(admin: Admin, request: Request) -> Any:
    """Dispatch one admin request to the matching :class:`Admin` method."""
    method = request.method
    parts = [unquote(p) for p in request.url.path.split("/")[2:] if p]
    body: dict[str, Any] = {}
    if method in ("POST", "PATCH"):
        raw = await request.body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise _bad("the body must be JSON") from exc
            if not isinstance(body, dict):
                raise _bad("the body must be a JSON object")
    route = (method, *parts)
    match route:
        case ("GET", "state"):
            return admin.get_state()
        case ("PATCH", "orgs", org_id):
            return admin.patch_org(org_id, body)
        case ("PATCH", "apps", client_id):
            return admin.patch_app(client_id, body)
        case ("POST", "users", username, "password"):
            return admin.set_password(username, body.get("password"))  # type: ignore[arg-type]
        case ("POST", "users", username, "deactivate"):
            return admin.deactivate(username)
        case ("POST", "users", username, "activate"):
            return admin.activate(username)
        case ("POST", "sessions", "kill"):
            unknown = set(body) - {"access_token", "username"}
            if unknown:
                raise _bad(f"unknown fields: {', '.join(sorted(unknown))}")
            return admin.kill_sessions(body.get("access_token"), body.get("username"))
        case ("POST", "apps", client_id, "revoke"):
            who = body.get("username")
            if who is not None and not isinstance(who, str):
                raise _bad("username must be a string")
            return admin.revoke_app(client_id, who)
        case ("POST", "authorize"):
            return admin.authorize(body)
        case ("POST", "clock", "advance"):
            return admin.advance_clock(body.get("seconds"))  # type: ignore[arg-type]
        case ("GET", "faults"):
            return {"faults": admin.faults.public()}
        case ("POST", "faults"):
            return admin.add_fault(body)
        case ("DELETE", "faults"):
            return admin.clear_faults()
        case ("GET", "requests"):
            q = request.query_params
            since = q.get("since")
            try:
                since_value = float(since) if since else None
            except ValueError as exc:
                raise _bad("since must be epoch seconds") from exc
            return {
                "requests": admin.requests(
                    grant_type=q.get("grant_type") or None,
                    org_id=q.get("org_id") or None,
                    path=q.get("path") or None,
                    since=since_value,
                )
            }
        case ("POST", "reset"):
            return admin.reset()
    raise AdminError(404, "not_found", f"no admin route {method} {request.url.path}")
