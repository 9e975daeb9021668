"""Writing a proxied call's response: the relay of Salesforce's answer, our own errors, and
the one log line's fields (:class:`Call`). ASGI messages only; no decisions."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from tokenkeep.errors import TokenkeepError
from tokenkeep.providers.salesforce_answers import ApiAnswer
from tokenkeep.proxy.headers import response_headers
from tokenkeep.proxy.outcome import error_retry_after, relayed_retry_after
from tokenkeep.proxy.upstream import UpstreamCutError, UpstreamResponse, has_header

__all__ = ["Call", "Message", "Receive", "Scope", "Send", "printable", "relay", "send_error"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(slots=True)
class Call:
    """What the one log line of a proxied call says. Never a token."""

    request_id: str
    method: str
    path: str | None  # None until the path is validated (then the escaped raw path is logged)
    connection_id: str | None = None
    org_id: str | None = None
    status: int | None = None
    retried: bool = False
    recovered: bool = False  # the replay after a refresh succeeded
    cause: str | None = None
    started: bool = False  # response headers already sent to the client
    session_error: bool = False  # the first answer was INVALID_SESSION_ID (org health)
    query: str | None = None  # the raw query string (logged only with TOKENKEEP_LOG_QUERY)
    user_id: str | None = None
    integration: str | None = None
    error_code: str | None = None  # Salesforce's errorCode, or ours when we answered
    answered_by: str | None = None  # "salesforce" (relayed) or "tokenkeep" (our error)


async def send_error(send: Send, call: Call, exc: TokenkeepError, now: float) -> None:
    """Our own error answer (``{"error": {"code", "message"}}``), unless the response has
    already started."""
    if call.started:
        return  # too late for another status line: the connection is cut short instead
    body = json.dumps({"error": {"code": exc.code, "message": exc.message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"tokenkeep-request-id", call.request_id.encode()),
    ]
    retry_after = error_retry_after(exc, now)
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    cause = exc.cause
    if cause is not None:
        # Our own 409/424 name the cause too, like a relayed Salesforce failure does.
        headers.append((b"tokenkeep-cause", cause.encode()))
        call.cause = cause
    call.status = exc.status_code
    call.error_code = exc.code
    if call.org_id is None:  # refused before a token was served: the refusal names it
        org_id = exc.details.get("org_id")
        call.org_id = org_id if isinstance(org_id, str) else None
    call.answered_by = "tokenkeep"
    call.started = True
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def relay(
    send: Send,
    call: Call,
    response: UpstreamResponse,
    head: bytes,
    cause: str | None,
    *,
    answer: ApiAnswer,
    log: Any,
) -> None:
    """Send the response to the client chunk by chunk, bytes unchanged.

    A limit that Salesforce sent without ``Retry-After`` gets ours
    (:func:`~tokenkeep.proxy.outcome.relayed_retry_after`); Salesforce's own header,
    when present, wins.
    """
    call.status = response.status
    call.answered_by = "salesforce"
    raw_headers = response.raw_headers
    headers = response_headers(raw_headers, call.request_id.encode(), cause=cause)
    seconds = relayed_retry_after(answer)
    if seconds is not None and not has_header(raw_headers, b"retry-after"):
        headers.append((b"retry-after", str(seconds).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    call.started = True
    try:
        if head:
            await send({"type": "http.response.body", "body": head, "more_body": True})
        read_chunk = response.read_chunk
        while chunk := await read_chunk():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except UpstreamCutError as exc:
        # Mid-body: the status is sent, so the only honest signal is a cut connection.
        log.warning("proxy.upstream_cut", request_id=call.request_id, error=exc.reason)
        return
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def printable(scope: Scope) -> str:
    """The request's raw path, escaped: a path refused before validation may carry CR/LF."""
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    return str(raw[:256].decode("latin-1").encode("unicode_escape").decode("ascii"))
