"""``GET /connections/{id}/token`` without FastAPI: direct mode's hot path.

Direct-mode clients ask for a token before every batch of Salesforce calls, so this one
read is served like the proxy is: a raw ASGI callable in front of the control app
(``server.GatewayApp`` hands it the requests whose method and path fit), without FastAPI's
routing, dependency resolution and response validation. It does exactly what the FastAPI
route in ``api/tokens.py`` does, with the same pieces: the API key check
(``api.deps.verify_bearer``, over ``ApiKeyRepository.verify`` and its in-process cache),
``RefreshCoordinator.fresh_token``, the ``last_used_from_address`` memo, the ``TokenOut``
body with ``Cache-Control: no-store``, errors in the API's shape
(``api.errors.tokenkeep_error_response``), and one request log line (``RequestLog``).

Anything unusual goes to the FastAPI route, which stays declared (OpenAPI, schemathesis)
and answers it as before: an id that does not fit ``CONNECTION_ID_PATTERN``, a query other
than a plain ``min_ttl`` within [0, 3600], a request body. So every answer a client can
see is the route's own.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenkeep.api.deps import verify_bearer
from tokenkeep.api.errors import tokenkeep_error_response
from tokenkeep.api.middleware import RequestLog
from tokenkeep.api.schemas import CONNECTION_ID_PATTERN
from tokenkeep.api.tokens import note_used_from, token_body, used_from_memo
from tokenkeep.errors import TokenkeepError
from tokenkeep.runtime import Gateway

__all__ = ["TokenFastPath"]

_PATH = re.compile("^/connections/(" + CONNECTION_ID_PATTERN.strip("^$") + ")/token$")
# What FastAPI's float Query(ge=0, le=3600) surely accepts as it is (the bound is checked
# below); anything else is left to it.
_MIN_TTL = re.compile(rb"^min_ttl=([0-9]{1,4}(?:\.[0-9]{1,6})?)$")
_DEFAULT_MIN_TTL = 60.0
# The scope key under which __call__ hands its parse of the request to _serve.
_PARSED = "tokenkeep.token_request"
_MAX_MIN_TTL = 3600.0


def _plain_request(scope: Scope) -> tuple[str, float] | None:
    """(connection id, min_ttl) when the request is one the fast path answers as the
    route would; None to hand it to FastAPI."""
    match = _PATH.match(scope["path"])
    if match is None:
        return None
    query: bytes = scope.get("query_string", b"")
    min_ttl = _DEFAULT_MIN_TTL
    if query:
        ttl = _MIN_TTL.match(query)
        if ttl is None:
            return None
        min_ttl = float(ttl.group(1))
        if min_ttl > _MAX_MIN_TTL:
            return None
    for name, _value in scope["headers"]:
        if name in (b"content-length", b"transfer-encoding"):
            return None  # a body: BodySizeLimit and FastAPI decide
    return match.group(1), min_ttl


def _authorization(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return ""


class TokenFastPath:
    """The raw ASGI answer to ``GET /connections/{id}/token``; ``control`` (the FastAPI
    app) answers everything it does not take."""

    def __init__(self, gateway: Gateway, control: Any) -> None:
        self.gateway = gateway
        self.control: ASGIApp = control
        self._memo = used_from_memo(control.state)  # the route's memo: one per app
        self._logged = RequestLog(self._serve, clock=gateway.clock)

    @staticmethod
    def wants(scope: Scope) -> bool:
        """Cheap first look (the dispatcher's): a GET whose path ends in ``/token``."""
        return scope["method"] == "GET" and scope["path"].endswith("/token")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plain = _plain_request(scope)
        if plain is None:
            await self.control(scope, receive, send)
            return
        scope[_PARSED] = plain
        await self._logged(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection_id, min_ttl = scope[_PARSED]
        gateway = self.gateway
        try:
            await verify_bearer(gateway.store, _authorization(scope))
            token = await gateway.coordinator.fresh_token(connection_id, min_ttl=min_ttl)
        except TokenkeepError as exc:
            await tokenkeep_error_response(exc)(scope, receive, send)
            return
        client = scope.get("client")
        await note_used_from(gateway, self._memo, connection_id, client[0] if client else None)
        body = token_body(token)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-length", str(len(body)).encode()),
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
