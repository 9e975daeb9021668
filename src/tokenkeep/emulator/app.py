"""The emulator's ASGI app: one app on many sockets, dispatched by the listening port.

The port tells which host was called (the login host, or an org's instance/My Domain
host); ``scope["client"]`` is the caller's address (IP lock compares it with the address
that obtained the token). Every request except admin calls lands in the bounded request log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from tokenkeep.emulator.admin import Admin
from tokenkeep.emulator.authorize import handle_authorize
from tokenkeep.emulator.faults import ALREADY_PROCESSING, Faults
from tokenkeep.emulator.gate import handle_data
from tokenkeep.emulator.http import (
    Call,
    ConnectionDrop,
    error_code_of,
    oauth_error,
    read_form,
    sf_error,
)
from tokenkeep.emulator.oauth import handle_identity, handle_oauth, token_call_org
from tokenkeep.emulator.state import EmulatorState, HostBinding

__all__ = ["EmulatorApp"]

Scope = dict[str, Any]


class EmulatorApp:
    """A raw ASGI callable (no framework routing on the data path)."""

    def __init__(
        self,
        state: EmulatorState,
        faults: Faults,
        admin: Admin,
        abort_connection: Callable[[tuple[str, int]], bool] | None = None,
    ) -> None:
        self.state = state
        self.faults = faults
        self.admin = admin
        self._abort = abort_connection

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        port = scope["server"][1] if scope.get("server") else 0
        binding = self.state.ports.get(port)
        path: str = scope["path"]
        request = Request(scope, receive)
        if binding is None:
            await PlainTextResponse("unknown host", 404)(scope, receive, send)
            return
        if path.startswith("/_emulator/") and binding.kind == "login":
            await (await self.admin.handle(request))(scope, receive, send)
            return
        call = Call()
        try:
            response = await self._route(request, binding, path, port, call)
        except ConnectionDrop:
            self._record(scope, binding, call, 0, "CONNECTION_DROPPED")
            if self._abort is not None and scope.get("client"):
                self._abort(tuple(scope["client"]))
                # Let the transport report the loss before the server looks at the cycle.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                return
            response = PlainTextResponse("", 502)
        self._record(
            scope, binding, call, response.status_code, call.error_code or error_code_of(response)
        )
        await response(scope, receive, send)

    async def _route(
        self, request: Request, binding: HostBinding, path: str, port: int, call: Call
    ) -> Response:
        if path.startswith("/services/data"):
            return await handle_data(self.state, self.faults, request, binding, call)
        if path.startswith("/services/oauth2/"):
            if binding.kind == "instance" and binding.org is None:
                return PlainTextResponse("this org moved to another instance", 404)
            if path.rstrip("/") == "/services/oauth2/authorize":
                return await handle_authorize(self.state, request, binding, port)
            if path.rstrip("/") == "/services/oauth2/token" and (
                self.state.refreshing or self.faults.armed("token")
            ):
                return await self._token(request, binding, call)
            response = await handle_oauth(self.state, request, binding, call, None)
            if response is not None:
                return response
        elif path.startswith("/id/"):
            return await handle_identity(self.state, request, call)
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    async def _token(self, request: Request, binding: HostBinding, call: Call) -> Response:
        """The token endpoint when a fault is armed or a refresh is in flight (the usual
        path reads no form here).

        A fault may be scoped to one org; on the shared login host only the form says
        which org the call is for, so it is read once and handed on to the grant. A
        refresh of a token whose previous refresh is still being processed (a latency
        fault holds it) is refused as Salesforce refuses it.
        """
        form = await read_form(request)
        org_id = token_call_org(self.state, binding, form)
        refresh_token = (
            form.get("refresh_token", "") if form.get("grant_type") == "refresh_token" else ""
        )
        if refresh_token and refresh_token in self.state.refreshing:
            _mark_grant(call, form, org_id)
            return oauth_error("invalid_grant", ALREADY_PROCESSING)
        fault = self.faults.take("token", org_id)
        in_flight = bool(refresh_token) and fault is not None and bool(fault.latency_seconds)
        if in_flight:
            self.state.refreshing.add(refresh_token)
        try:
            if fault is not None:
                if fault.latency_seconds:
                    await asyncio.sleep(fault.latency_seconds)
                if fault.kind != "latency":
                    # Logged with its grant type and org, so tests can count failed grants.
                    _mark_grant(call, form, org_id)
                    if fault.kind == "drop":
                        raise ConnectionDrop
                    if fault.kind == "oauth_error":
                        return oauth_error(fault.error, fault.error_description)
                    return PlainTextResponse(
                        "Service Unavailable (injected)", status_code=fault.status
                    )
            response = await handle_oauth(self.state, request, binding, call, form)
        finally:
            if in_flight:
                self.state.refreshing.discard(refresh_token)
        return response or sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    def _record(
        self, scope: Scope, binding: HostBinding, call: Call, status: int, error_code: str | None
    ) -> None:
        client = scope.get("client")
        self.state.log.append(
            {
                "time": self.state.clock.time(),
                "host": binding.url,
                "method": scope["method"],
                "path": scope["path"],
                "grant_type": call.grant_type,
                "org_id": call.org_id or (binding.org.org_id if binding.org else None),
                "client": client[0] if client else None,
                "status": status,
                "errorCode": error_code,
            }
        )


def _mark_grant(call: Call, form: dict[str, str], org_id: str | None) -> None:
    call.grant_type = form.get("grant_type") or None
    call.org_id = org_id


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
