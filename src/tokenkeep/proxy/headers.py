"""Header hygiene for proxied calls (pure functions over ASGI-style header lists).

Request: the client's credentials (``Authorization``, ``X-SFDC-Session``, ``Cookie``), the
``Host`` (the upstream host comes from the stored ``instance_url`` only), hop-by-hop headers
(RFC 9110 §7.6.1, plus every name listed in ``Connection``), our own ``Connection-Id`` and any
``Tokenkeep-*`` header are dropped; the connection's real token is set.

Response: everything Salesforce sent passes (status, ``Sforce-Limit-Info``, ``Retry-After``,
body bytes), minus hop-by-hop headers and any ``Tokenkeep-*`` header (only we may set
those), plus ``Tokenkeep-Request-Id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "HOP_BY_HOP",
    "ClientCredential",
    "ScannedRequest",
    "client_credential",
    "header_value",
    "response_headers",
    "scan_request",
    "upstream_request_headers",
    "with_credentials",
]

Headers = Sequence[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded upstream. ``content-length`` is set again by the transport from the body it
# actually sends; ``expect`` is answered by our own server, not relayed.
_REQUEST_DROP = frozenset(
    {
        b"authorization",
        b"x-sfdc-session",
        b"cookie",
        b"host",
        b"connection-id",
        b"content-length",
        b"expect",
    }
)
_ALWAYS_DROP = _REQUEST_DROP | HOP_BY_HOP
_OUR_PREFIX = b"tokenkeep-"
_AUTH_SCHEMES = (b"bearer ", b"oauth ")


class ClientCredential:
    """The API key a client presented, and whether it came in ``X-SFDC-Session``."""

    __slots__ = ("key", "via_session_header")

    def __init__(self, key: str, via_session_header: bool) -> None:
        self.key = key
        self.via_session_header = via_session_header

    def __repr__(self) -> str:
        return f"ClientCredential(key='***', via_session_header={self.via_session_header})"


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case bytes), or ``None``."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


@dataclass(slots=True)
class ScannedRequest:
    """Everything the proxy needs from the client's headers, gathered in one pass."""

    forward: list[tuple[str, str]]  # cleaned, ready to send (credentials not yet added)
    credential: ClientCredential | None
    used_session_header: bool  # the client sent X-SFDC-Session (Bulk API 1.0)
    connection_id: str | None
    content_length: bytes | None
    has_transfer_encoding: bool


def scan_request(headers: Headers) -> ScannedRequest:
    """One pass over the client's headers (this runs on every proxied call).

    ``Authorization: Bearer <key>`` (or Salesforce's older ``OAuth <key>``) wins over
    ``X-SFDC-Session: <key>`` (Bulk API 1.0 clients send only that one).
    """
    forward: list[tuple[str, str]] = []
    bearer: str | None = None
    session: str | None = None
    connection_id: str | None = None
    content_length: bytes | None = None
    has_te = has_ae = False
    listed: set[bytes] = set()
    for key, value in headers:
        name = key.lower()  # ASGI servers send lower-case names; a cheap guarantee
        if name not in _ALWAYS_DROP and not name.startswith(_OUR_PREFIX):
            forward.append((key.decode("latin-1"), value.decode("latin-1")))
            if name == b"accept-encoding":
                has_ae = True
            continue
        if name == b"authorization":
            if bearer is None:
                lowered = value[:7].lower()
                for scheme in _AUTH_SCHEMES:
                    if lowered.startswith(scheme):
                        bearer = value[len(scheme) :].strip().decode("latin-1")
                        break
        elif name == b"x-sfdc-session":
            if session is None:
                session = value.strip().decode("latin-1")
        elif name == b"connection-id":
            if connection_id is None:
                connection_id = value.decode("latin-1")
        elif name == b"content-length":
            content_length = value
        elif name == b"transfer-encoding":
            has_te = True
        elif name == b"connection":
            listed.update(t.strip().lower() for t in value.split(b",") if t.strip())
    if listed:
        # Headers named in Connection are hop-by-hop too (RFC 9110 §7.6.1).
        forward = [(k, v) for k, v in forward if k.lower().encode("latin-1") not in listed]
        has_ae = any(k.lower() == "accept-encoding" for k, _ in forward)
    if not has_ae:
        # Without it the HTTP client library would ask for gzip on the client's behalf, and
        # the client would get a compressed body it never asked for (bodies pass unchanged).
        forward.append(("Accept-Encoding", "identity"))
    if bearer:
        credential: ClientCredential | None = ClientCredential(bearer, False)
    elif session:
        credential = ClientCredential(session, True)
    else:
        credential = None
    return ScannedRequest(
        forward, credential, session is not None, connection_id, content_length, has_te
    )


def client_credential(headers: Headers) -> tuple[ClientCredential | None, bool]:
    """The tokenkeep API key the client sent, and whether it sent ``X-SFDC-Session`` at all."""
    scanned = scan_request(headers)
    return scanned.credential, scanned.used_session_header


def _connection_listed(headers: Headers) -> frozenset[bytes]:
    named: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            named.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(named)


def with_credentials(
    forward: list[tuple[str, str]], token: str, *, session_header: bool, content_length: int | None
) -> list[tuple[str, str]]:
    """The cleaned client headers plus the real credentials (and a known body length).

    ``session_header`` adds ``X-SFDC-Session: <token>`` (Bulk API 1.0 reads only that one);
    ``content_length`` is set when the body's length is known (a streamed upload keeps a
    fixed length instead of turning into chunked encoding).
    """
    out = [*forward, ("Authorization", "Bearer " + token)]
    if session_header:
        out.append(("X-SFDC-Session", token))
    if content_length is not None:
        out.append(("Content-Length", str(content_length)))
    return out


def upstream_request_headers(
    headers: Headers, token: str, *, session_header: bool, content_length: int | None
) -> list[tuple[str, str]]:
    """The headers to send upstream: the client's, cleaned, plus the real credentials."""
    return with_credentials(
        scan_request(headers).forward,
        token,
        session_header=session_header,
        content_length=content_length,
    )


def response_headers(
    upstream: Iterable[tuple[bytes, bytes]],
    request_id: bytes,
    *,
    cause: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """Salesforce's response headers minus hop-by-hop ones, plus ours.

    ``Content-Length`` passes: the body is relayed byte for byte (no decompression).
    """
    upstream = list(upstream)
    listed = _connection_listed(upstream)
    out = [
        (key, value)
        for key, value in upstream
        if (name := key.lower()) not in HOP_BY_HOP
        and name not in listed
        and not name.startswith(_OUR_PREFIX)
    ]
    out.append((b"tokenkeep-request-id", request_id))
    if cause is not None:
        out.append((b"tokenkeep-cause", cause.encode("ascii")))
    return out
