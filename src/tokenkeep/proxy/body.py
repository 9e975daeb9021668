"""Reading a proxied request's body: buffered (replayable once) or streamed (sent once).

Bodies up to ``buffer_limit`` bytes (``TOKENKEEP_RETRY_BUFFER_BYTES``, default 1 MiB) are
read whole, so the request can be replayed once after a refresh. A larger body — by its
``Content-Length``, or as soon as a chunked body passes the limit — is handed upstream as an
async generator that pulls from the ASGI ``receive`` channel as the upstream socket drains:
it is never held in memory, and it is NOT replayed (documented in the proxy's module doc).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from tokenkeep.errors import ValidationError
from tokenkeep.proxy.headers import ScannedRequest

__all__ = ["Body", "ClientGoneError", "read_body"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class ClientGoneError(Exception):
    """The client disconnected while we were reading its body."""


@dataclass(slots=True)
class Body:
    """A request body: ``data`` (buffered, replayable) or ``stream`` (sent once)."""

    data: bytes | None
    stream: AsyncIterator[bytes] | None
    length: int | None  # the declared length of a streamed body, when the client gave one

    @property
    def replayable(self) -> bool:
        return self.stream is None


async def read_body(
    method: str, scanned: ScannedRequest, receive: Receive, *, buffer_limit: int
) -> Body:
    """Buffer the body if it fits in ``buffer_limit`` bytes, else return it as a stream."""
    declared: int | None = None
    if scanned.content_length is not None:
        try:
            declared = int(scanned.content_length)
        except ValueError:
            raise ValidationError("Content-Length is not a number.") from None
        if declared < 0:
            raise ValidationError("Content-Length is negative.")
    elif not scanned.has_transfer_encoding:
        # No length and not chunked: HTTP/1.1 says there is no body.
        return Body(None if method in _NO_BODY_METHODS else b"", None, None)
    if declared is not None and declared > buffer_limit:
        return Body(None, _stream_body(receive, []), declared)
    chunks: list[bytes] = []
    total = 0
    while True:  # bounded by the client's body: each message carries more of it
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            total += len(chunk)
        if not message.get("more_body", False):
            return Body(b"".join(chunks), None, None)
        if total > buffer_limit:
            return Body(None, _stream_body(receive, chunks), declared)


async def _stream_body(receive: Receive, prefix: list[bytes]) -> AsyncIterator[bytes]:
    """The rest of the client's body, as it arrives (never held whole in memory)."""
    for chunk in prefix:
        yield chunk
    prefix.clear()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
