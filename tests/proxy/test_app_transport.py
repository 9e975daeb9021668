"""The proxy app over real sockets, against a tiny recording upstream (src/tokenkeep/proxy/app.py).

Hygiene, refusals that never reach upstream, streaming, upstream failures.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator

import aiohttp
import psutil
import pytest
from tests.proxy.proxy_support import (
    API_KEY,
    EchoUpstream,
    EmulatorTokens,
    proxy_settings,
    running_proxy,
)
from tests.proxy.ssrf_corpus import SSRF_ATTEMPTS

# The proxy's behaviour holds for each upstream client (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("upstream_client")

UPSTREAM_TOKEN = "00Dxx0000001gPL!AQ4AQUPSTREAMTOKENxyz"
ORG = "00Dxx0000001gPLEAY"


@pytest.fixture
async def echo() -> AsyncIterator[EchoUpstream]:
    async with EchoUpstream().running() as upstream:
        yield upstream


@pytest.fixture
async def proxy(echo: EchoUpstream) -> AsyncIterator[str]:
    tokens = EmulatorTokens()
    tokens.add_static("conn1", echo.url, UPSTREAM_TOKEN, org_id=ORG)
    async with running_proxy(tokens) as (url, _app):
        yield url


async def _raw_status(base: str, raw_path: bytes, query: bytes) -> int:
    """Send a request line exactly as given (no client-side normalisation); return the status."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    target = raw_path + (b"?" + query if query else b"")
    writer.write(
        b"GET "
        + target
        + b" HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
        + API_KEY.encode()
        + b"\r\nConnection-Id: conn1\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


def _wire_safe(raw_path: bytes, query: bytes) -> bool:
    # A raw CR/LF/space/NUL cannot travel inside a request line: the HTTP parser splits the
    # line there, so the server sees a different (harmless) request. Those attempts are
    # sent straight to the ASGI app below instead.
    return not any(b in raw_path + query for b in b"\r\n \x00\t")


async def test_ssrf_corpus_is_refused_and_never_reaches_upstream(
    proxy: str, echo: EchoUpstream
) -> None:
    sent = 0
    for raw_path, query in SSRF_ATTEMPTS:
        if _wire_safe(raw_path, query):
            status = await _raw_status(proxy, raw_path, query)
            assert status == 400, (raw_path, query, status)
            sent += 1
    assert sent >= 40
    assert echo.seen == []
    # The same socket path works for a legitimate call: the counter above can count.
    assert await _raw_status(proxy, b"/proxy/services/data/v60.0/limits", b"") == 200
    assert len(echo.seen) == 1


async def test_ssrf_corpus_at_the_asgi_boundary_never_reaches_upstream(
    echo: EchoUpstream,
) -> None:
    tokens = EmulatorTokens()
    tokens.add_static("conn1", echo.url, UPSTREAM_TOKEN, org_id=ORG)
    async with running_proxy(tokens) as (_url, app):
        for raw_path, query in SSRF_ATTEMPTS:
            sent: list[dict[str, object]] = []

            async def receive() -> dict[str, object]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, object], sent: list = sent) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "method": "GET",
                "path": raw_path.decode("latin-1"),
                "raw_path": raw_path,
                "query_string": query,
                "headers": [
                    (b"authorization", b"Bearer " + API_KEY.encode()),
                    (b"connection-id", b"conn1"),
                ],
            }
            await app(scope, receive, send)
            assert sent[0]["status"] == 400, (raw_path, query)
            assert json.loads(sent[1]["body"])["error"]["code"] == "invalid_path"  # type: ignore[arg-type]
    assert echo.seen == []


async def test_refused_calls_use_our_error_body_and_never_reach_upstream(
    proxy: str, echo: EchoUpstream
) -> None:
    good = {"Authorization": f"Bearer {API_KEY}"}
    cases = [
        ("/c/unknown/services/data", good, 404, "not_found"),
        ("/proxy/services/data", good, 400, "missing_connection_id"),
        (
            "/c/conn1/services/data",
            {"Authorization": "Bearer tk_wrong_key_0000000000"},
            401,
            "unauthorized",
        ),
        ("/c/conn1/services/data", {}, 401, "unauthorized"),
        ("/c/conn1/services/%2e%2e/x", good, 400, "invalid_path"),
    ]
    async with aiohttp.ClientSession() as http:
        for path, headers, status, code in cases:
            async with http.get(yarl_url(proxy + path), headers=headers) as resp:
                body = await resp.json()
                assert resp.status == status, path
                assert body["error"]["code"] == code
                assert resp.headers["Tokenkeep-Request-Id"]
    assert echo.seen == []


def yarl_url(url: str) -> object:
    import yarl

    return yarl.URL(url, encoded=True)


async def test_headers_are_cleaned_and_the_real_token_is_set(
    proxy: str, echo: EchoUpstream
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            proxy + "/c/conn1/services/data/v60.0/query?q=SELECT+Id+FROM+Account",
            headers={
                "Authorization": f"Bearer {API_KEY}",
                "Cookie": "sid=client-cookie",
                "Connection-Id": "other",
                "Tokenkeep-Debug": "1",
                "X-Custom": "kept",
                "Sforce-Call-Options": "client=acme",
            },
        ) as resp,
    ):
        assert resp.status == 200
        assert await resp.read() == b'{"ok":true}'
        assert resp.headers["Sforce-Limit-Info"] == "api-usage=18/15000"
        assert len(resp.headers["Tokenkeep-Request-Id"]) == 16
    (seen,) = echo.seen
    headers = {k.lower(): v for k, v in seen.headers}
    assert seen.path_qs == "/services/data/v60.0/query?q=SELECT+Id+FROM+Account"
    assert headers["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert "cookie" not in headers
    assert "connection-id" not in headers
    assert "tokenkeep-debug" not in headers
    assert headers["x-custom"] == "kept"
    assert headers["sforce-call-options"] == "client=acme"
    assert headers["host"] == echo.url.removeprefix("http://")
    assert API_KEY not in json.dumps(seen.headers)


async def test_bulk_v1_session_header_carries_the_real_token(
    proxy: str, echo: EchoUpstream
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            proxy + "/c/conn1/services/async/60.0/job",
            headers={"X-SFDC-Session": API_KEY, "Content-Type": "application/xml"},
            data=b"<jobInfo/>",
        ) as resp,
    ):
        assert resp.status == 200
    headers = {k.lower(): v for k, v in echo.seen[0].headers}
    assert headers["x-sfdc-session"] == UPSTREAM_TOKEN
    assert headers["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert headers["content-type"] == "application/xml"
    assert echo.seen[0].body_bytes == len(b"<jobInfo/>")


async def test_salesforce_status_headers_and_body_pass_unchanged(
    proxy: str, echo: EchoUpstream
) -> None:
    limit = json.dumps(
        [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    ).encode()
    echo.script = [
        (403, limit, {"Retry-After": "120", "Sforce-Limit-Info": "api-usage=15000/15000"})
    ]
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            proxy + "/c/conn1/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as resp,
    ):
        assert resp.status == 403
        assert resp.headers["Retry-After"] == "120"
        assert await resp.read() == limit
        assert "Tokenkeep-Cause" not in resp.headers
    assert len(echo.seen) == 1


async def test_a_header_value_that_is_not_ascii(
    proxy: str, echo: EchoUpstream, upstream_client: str
) -> None:
    """aiohttp relays Salesforce's header bytes unchanged; pyreqwest cannot read them and
    answers a 502 that says why (docs/ARCHITECTURE.md), never a 500 or a silent drop."""
    echo.script = [
        (200, b'{"ok":true}', {"Content-Disposition": 'attachment; filename="café.pdf"'})
    ]
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            proxy + "/c/conn1/services/data/v60.0/sobjects/ContentVersion/068xx/VersionData",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as resp,
    ):
        body = await resp.read()
        if upstream_client == "aiohttp":
            assert resp.status == 200
            raw = {key.lower(): value for key, value in resp.raw_headers}
            assert raw[b"content-disposition"] == 'attachment; filename="café.pdf"'.encode()
            assert body == b'{"ok":true}'
        else:
            assert resp.status == 502
            error = json.loads(body)["error"]
            assert error["code"] == "upstream_unreachable"
            assert "not ASCII" in error["message"]
    assert len(echo.seen) == 1


async def test_limit_info_is_remembered_per_org(echo: EchoUpstream) -> None:
    tokens = EmulatorTokens()
    tokens.add_static("conn1", echo.url, UPSTREAM_TOKEN, org_id=ORG)
    async with running_proxy(tokens) as (url, app), aiohttp.ClientSession() as http:
        assert app.limit_info(ORG) is None
        async with http.get(
            url + "/c/conn1/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as resp:
            assert resp.status == 200
        info = app.limit_info(ORG)
        assert info is not None
        assert info.value == "api-usage=18/15000"


async def _upload_body(total: int) -> AsyncIterator[bytes]:
    block = b"Id,Name\n" + b"x" * 65528
    sent = 0
    while sent < total:
        part = block[: min(len(block), total - sent)]
        sent += len(part)
        yield part


async def _upload(http: aiohttp.ClientSession, proxy: str, size: int) -> None:
    """A Bulk API CSV upload of ``size`` bytes, streamed (``Content-Length`` declared)."""
    async with http.put(
        proxy + "/c/conn1/services/data/v60.0/jobs/ingest/750xx/batches",
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": "text/csv",
            "Content-Length": str(size),
        },
        data=_upload_body(size),
    ) as resp:
        assert resp.status == 200
        await resp.read()


async def test_20_mb_upload_and_download_stream_with_flat_memory(
    proxy: str, echo: EchoUpstream
) -> None:
    size = 20 * 1024 * 1024
    async with aiohttp.ClientSession() as http:
        # Warm-up: what the first streamed call costs once (pools; pyreqwest's runtime
        # threads and their arenas, ~15 MB whatever the size: 5 MB and 100 MB measured the
        # same) is not what a body costs.
        await _upload(http, proxy, 2 * 1024 * 1024)
        echo.seen.clear()
        gc.collect()
        process = psutil.Process()
        before = process.memory_info().rss
        await _upload(http, proxy, size)
        echo.response_bytes = size
        received = 0
        async with http.get(
            proxy + "/c/conn1/services/data/v60.0/jobs/query/750xx/results",
            headers={"Authorization": f"Bearer {API_KEY}"},
        ) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                received += len(chunk)
    after = process.memory_info().rss
    assert echo.seen[0].body_bytes == size
    assert received == size
    # Two 20 MB bodies went through this process (client, proxy and upstream all live here).
    assert after - before < 15 * 1024 * 1024, (after - before) / 1e6


async def test_a_chunked_upload_larger_than_the_buffer_streams_once(echo: EchoUpstream) -> None:
    tokens = EmulatorTokens()
    tokens.add_static("conn1", echo.url, UPSTREAM_TOKEN, org_id=ORG)
    async with (
        running_proxy(tokens, retry_buffer_bytes=1024) as (url, _),
        aiohttp.ClientSession() as http,
        http.post(
            url + "/c/conn1/services/data/v60.0/x",
            headers={"Authorization": f"Bearer {API_KEY}"},
            data=_upload_body(300_000),
        ) as resp,
    ):
        assert resp.status == 200
    assert echo.seen[0].body_bytes == 300_000


async def test_unreachable_upstream_is_502_with_our_body() -> None:
    tokens = EmulatorTokens()
    tokens.add_static("dead", "http://127.0.0.1:9", UPSTREAM_TOKEN)
    async with (
        running_proxy(tokens) as (url, _),
        aiohttp.ClientSession() as http,
        http.get(
            url + "/c/dead/services/data", headers={"Authorization": f"Bearer {API_KEY}"}
        ) as resp,
    ):
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "upstream_unreachable"


async def test_slow_upstream_is_504_with_our_body(echo: EchoUpstream) -> None:
    import socket

    # A listener that accepts and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    tokens = EmulatorTokens()
    tokens.add_static("slow", f"http://127.0.0.1:{silent.getsockname()[1]}", UPSTREAM_TOKEN)
    try:
        async with (
            running_proxy(tokens, upstream_timeout_seconds=0.3) as (url, _),
            aiohttp.ClientSession() as http,
            http.get(
                url + "/c/slow/services/data", headers={"Authorization": f"Bearer {API_KEY}"}
            ) as resp,
        ):
            assert resp.status == 504
            assert (await resp.json())["error"]["code"] == "upstream_timeout"
    finally:
        silent.close()


async def test_one_log_line_per_call_and_never_a_token(echo: EchoUpstream) -> None:
    import io

    import structlog

    from tokenkeep.observability.logging import configure_logging

    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    tokens = EmulatorTokens()
    tokens.add_static("conn1", echo.url, UPSTREAM_TOKEN, org_id=ORG)
    try:
        async with running_proxy(tokens) as (url, _), aiohttp.ClientSession() as http:
            async with http.get(
                url + "/c/conn1/services/data/v60.0/query?q=SELECT+Secret__c+FROM+Account",
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as resp:
                assert resp.status == 200
            async with http.get(
                url + "/c/conn1/services/data", headers={"Authorization": f"Bearer {API_KEY}x"}
            ) as resp:
                assert resp.status == 401
    finally:
        structlog.reset_defaults()
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines() if '"proxy.call"' in line]
    assert [(line["status"], line["connection_id"]) for line in lines] == [
        (200, "conn1"),
        (401, "conn1"),
    ]
    assert lines[0]["path"] == "/services/data/v60.0/query"  # no query string in logs
    assert lines[0]["org_id"] == ORG
    assert lines[0]["retried"] is False
    assert "duration_ms" in lines[0]
    assert UPSTREAM_TOKEN not in output
    assert API_KEY not in output
    assert "Secret__c" not in output


async def test_connections_known_as_broken_answer_at_once(echo: EchoUpstream) -> None:
    tokens = EmulatorTokens()
    tokens.add_static("gone", echo.url, UPSTREAM_TOKEN, org_id=ORG)
    tokens.add_static("locked", echo.url, UPSTREAM_TOKEN, org_id=ORG)
    tokens.conns["gone"].needs_reauth = True
    tokens.conns["locked"].action_required = True
    async with running_proxy(tokens) as (url, _), aiohttp.ClientSession() as http:
        for conn, status, code, cause in (
            ("gone", 409, "needs_reauth", "revoked"),
            ("locked", 424, "action_required", "ip_locked"),
        ):
            async with http.get(
                url + f"/c/{conn}/services/data/v60.0/limits",
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as resp:
                assert resp.status == status
                assert (await resp.json())["error"]["code"] == code
                assert resp.headers["Tokenkeep-Cause"] == cause
    assert echo.seen == []


def test_pyreqwest_missing_is_one_clear_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``TOKENKEEP_UPSTREAM_CLIENT=pyreqwest`` without the optional package: the gateway
    refuses to start with what to install, not an ImportError trace."""
    import sys

    from tokenkeep.errors import ConfigError
    from tokenkeep.proxy.upstream import create_upstream

    monkeypatch.setitem(sys.modules, "pyreqwest", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "tokenkeep.proxy.upstream_reqwest", raising=False)
    monkeypatch.delitem(sys.modules, "pyreqwest.client", raising=False)
    monkeypatch.delitem(sys.modules, "pyreqwest.exceptions", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'tokenkeep\[pyreqwest\]'"):
        create_upstream(proxy_settings(upstream_client="pyreqwest"))
