"""Pure-ASGI middleware of the control API: a body-size limit and the request log.

Both are raw ASGI callables (no ``BaseHTTPMiddleware``): they see every request, cost a
few attribute reads, and never buffer a body.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenkeep.clock import Clock
from tokenkeep.observability.logging import REDACTED, get_logger

__all__ = ["BodySizeLimit", "RequestLog", "loggable_path", "send_error"]

_CONNECT_LINK = "/connect/"
_CONNECT_SESSIONS = "/connect/sessions"


def loggable_path(path: str) -> str:
    """``path`` as the request log may show it.

    A connect link (``/connect/{token}``) carries its bearer token in the path: whoever reads
    it from a log could open the link before the customer's admin does, so it is masked.
    """
    if path.startswith(_CONNECT_LINK) and path != _CONNECT_SESSIONS:
        return _CONNECT_LINK + REDACTED
    return path


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    """Send a complete ``{"error": ...}`` JSON response on a raw ASGI channel."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    """Raised from ``receive`` when the streamed body passes the limit."""


class BodySizeLimit:
    """Answer 413 ``payload_too_large`` to bodies over ``max_bytes``.

    ``Content-Length`` is checked up front; a chunked body (or a lying header) is counted
    as it streams in, so the limit holds even when no length is declared.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"The request body is larger than the limit of {self.max_bytes} bytes."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, 400, "bad_request", "Invalid Content-Length header.")
                    return
                if declared > self.max_bytes:
                    await send_error(send, 413, "payload_too_large", self._message())
                    return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # FastAPI turns any error while reading the body into its own 400; once we know
            # the real cause, that response is dropped and ours is sent instead.
            if exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            pass
        if exceeded and not started:
            await send_error(send, 413, "payload_too_large", self._message())


class RequestLog:
    """One log line per request (method, path, status, duration); 500 for the unexpected.

    Headers, query strings and bodies are never logged: they are where secrets travel.
    An exception that escapes the application is logged with its traceback (through the
    redacting logger) and answered with a bare ``internal_error``: no details leak.
    """

    def __init__(self, app: ASGIApp, clock: Clock, logger_name: str = "tokenkeep.api") -> None:
        self.app = app
        self.clock = clock
        self.log = get_logger(logger_name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = self.clock.monotonic()
        status = 0

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        fields: dict[str, Any] = {
            "method": scope.get("method"),
            "path": loggable_path(scope.get("path", "")),
        }
        try:
            await self.app(scope, receive, recording_send)
        except Exception:
            self.log.exception("unhandled error", **fields)
            if status == 0:
                status = 500
                await send_error(send, 500, "internal_error", "An unexpected error occurred.")
        duration_ms = round((self.clock.monotonic() - started_at) * 1000, 2)
        level = "warning" if status >= 500 else "info"
        getattr(self.log, level)("request", status=status, duration_ms=duration_ms, **fields)
