"""Header hygiene (src/tokenkeep/proxy/headers.py)."""

from __future__ import annotations

from tokenkeep.proxy.headers import client_credential, response_headers, upstream_request_headers

CLIENT_HEADERS = [
    (b"host", b"gateway.local:8400"),
    (b"authorization", b"Bearer tk_client_key_1234567890"),
    (b"cookie", b"sid=stolen"),
    (b"connection", b"keep-alive, X-Private-Hop"),
    (b"x-private-hop", b"secret-hop"),
    (b"keep-alive", b"timeout=5"),
    (b"proxy-authorization", b"Basic Zm9vOmJhcg=="),
    (b"te", b"trailers"),
    (b"trailer", b"X-Checksum"),
    (b"transfer-encoding", b"chunked"),
    (b"upgrade", b"websocket"),
    (b"connection-id", b"conn1"),
    (b"tokenkeep-debug", b"1"),
    (b"content-length", b"12"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"sforce-call-options", b"client=acme"),
    (b"x-prettyprint", b"1"),
]


def _names(headers: list[tuple[str, str]]) -> list[str]:
    return [k.lower() for k, _ in headers]


def test_client_credentials_and_hop_by_hop_headers_never_go_upstream() -> None:
    out = upstream_request_headers(
        CLIENT_HEADERS, "00DREALTOKEN", session_header=False, content_length=None
    )
    names = _names(out)
    for dropped in (
        "host",
        "cookie",
        "connection",
        "x-private-hop",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "connection-id",
        "tokenkeep-debug",
        "content-length",
        "x-sfdc-session",
    ):
        assert dropped not in names, dropped
    assert ("Authorization", "Bearer 00DREALTOKEN") in out
    assert names.count("authorization") == 1
    assert "tk_client_key" not in repr(out)
    for kept in ("accept", "content-type", "sforce-call-options", "x-prettyprint"):
        assert kept in names


def test_bulk_v1_session_header_is_replaced_by_the_real_token() -> None:
    headers = [(b"x-sfdc-session", b"tk_client_key_1234567890"), (b"content-type", b"text/csv")]
    credential, used_session = client_credential(headers)
    assert credential is not None
    assert credential.key == "tk_client_key_1234567890"
    assert credential.via_session_header
    assert used_session
    out = upstream_request_headers(headers, "00DREAL", session_header=True, content_length=100)
    assert ("X-SFDC-Session", "00DREAL") in out
    assert ("Authorization", "Bearer 00DREAL") in out
    assert ("Content-Length", "100") in out
    assert "tk_client_key" not in repr(out)


def test_client_credential_accepts_bearer_and_oauth_schemes() -> None:
    bearer, _ = client_credential([(b"Authorization", b"bearer abc")])
    oauth, _ = client_credential([(b"authorization", b"OAuth def")])
    assert bearer is not None
    assert bearer.key == "abc"
    assert oauth is not None
    assert oauth.key == "def"
    assert client_credential([(b"authorization", b"Basic Zm9v")])[0] is None
    assert client_credential([])[0] is None
    assert "abc" not in repr(bearer)


def test_response_keeps_salesforce_headers_and_adds_the_request_id() -> None:
    upstream = [
        (b"Content-Type", b"application/json;charset=UTF-8"),
        (b"Sforce-Limit-Info", b"api-usage=18/15000"),
        (b"Retry-After", b"30"),
        (b"Content-Length", b"42"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Tokenkeep-Cause", b"forged"),
        (b"Set-Cookie", b"BrowserId=x"),
    ]
    out = response_headers(upstream, b"req123", cause="expired")
    names = [k.lower() for k, _ in out]
    assert (b"Sforce-Limit-Info", b"api-usage=18/15000") in out
    assert (b"Retry-After", b"30") in out
    assert (b"Content-Length", b"42") in out
    assert (b"Set-Cookie", b"BrowserId=x") in out
    for dropped in (b"transfer-encoding", b"connection", b"x-hop", b"keep-alive"):
        assert dropped not in names
    assert (b"tokenkeep-request-id", b"req123") in out
    assert out.count((b"tokenkeep-cause", b"expired")) == 1
    assert (b"Tokenkeep-Cause", b"forged") not in out
    assert (b"tokenkeep-cause", b"expired") in response_headers(upstream, b"r", cause="expired")
    assert b"tokenkeep-cause" not in [k for k, _ in response_headers(upstream, b"r")]


def test_accept_encoding_is_the_clients_or_identity() -> None:
    asked = upstream_request_headers(
        [(b"accept-encoding", b"gzip")], "T", session_header=False, content_length=None
    )
    assert ("accept-encoding", "gzip") in asked
    assert [k for k, _ in asked if k.lower() == "accept-encoding"] == ["accept-encoding"]
    # Nothing asked: the upstream client library must not ask for gzip on our behalf.
    silent = upstream_request_headers([], "T", session_header=False, content_length=None)
    assert ("Accept-Encoding", "identity") in silent
    # Named in Connection: hop-by-hop, dropped, so identity again.
    hop = upstream_request_headers(
        [(b"connection", b"accept-encoding"), (b"accept-encoding", b"br")],
        "T",
        session_header=False,
        content_length=None,
    )
    assert ("Accept-Encoding", "identity") in hop
    assert ("accept-encoding", "br") not in hop
