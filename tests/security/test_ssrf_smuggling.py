"""SSRF and request smuggling against the real gateway (uvicorn), with a trap that counts hits.

Issue 13, suite item 13. A gateway from the harness (the server ``tokenkeep serve`` runs)
in front of the emulator, one connection (``conn1``). A "must never be hit" listener runs on
another loopback address (127.0.0.2) and port, and every hostile request names IT wherever
the attacker would name a host: the ``evil.example`` of the shared SSRF corpus
(``tests/proxy/ssrf_corpus.py``) is replaced by the trap's ``host:port``, and the Host,
X-Forwarded-Host, Forwarded and absolute-form request targets point at it too. Requests go
over raw sockets (no client-side normalisation): encodings, CRLF in path and headers,
conflicting Content-Length / Transfer-Encoding, duplicate Content-Length, obs-fold and
oversized headers. Proven: the trap counts ZERO connections at the end; path attacks and
malformed framing get a 4xx or a closed connection, never a second (smuggled) answer; a
header naming another host changes nothing (the call goes to the connection's instance, as
the emulator's request log shows); and the gateway still serves a normal call afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.proxy.ssrf_corpus import SSRF_ATTEMPTS

from tokenkeep.harness import GatewayUnderTest, running_gateway

LIMITS = b"/services/data/v60.0/limits"
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


class Trap:
    """A listener that must never be reached: counts every connection it accepts."""

    def __init__(self) -> None:
        self.hits = 0
        self.hostport = b""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.hits += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ntrapped")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Trap]:
        server = await asyncio.start_server(self._serve, "127.0.0.2", 0)
        self.hostport = f"127.0.0.2:{server.sockets[0].getsockname()[1]}".encode()
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


class Raw:
    """Raw HTTP/1.1 bytes to the gateway; the status of every answer read until close."""

    def __init__(self, gw: GatewayUnderTest) -> None:
        host, port = gw.base_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.auth = b"Authorization: Bearer " + gw.api_key.reveal().encode() + b"\r\n"

    async def send(self, data: bytes, *, seconds: float = 5.0) -> list[int]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(data)
            await writer.drain()
            received = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(seconds):
                    while chunk := await reader.read(65536):
                        received += chunk
        finally:
            writer.close()
        return [int(s) for s in _STATUS.findall(received)]

    def get(self, target: bytes, headers: bytes = b"", *, connection_id: bool = True) -> bytes:
        cid = b"Connection-Id: conn1\r\n" if connection_id else b""
        return (
            b"GET " + target + b" HTTP/1.1\r\nHost: gw\r\n" + self.auth + cid + headers
            + b"Connection: close\r\n\r\n"
        )  # fmt: skip


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[GatewayUnderTest, Trap, Raw]]:
    async with Trap().running() as trap, running_gateway(tmp_path / "tk", orgs=1) as gw:
        await gw.connect("conn1", via="import")
        raw = Raw(gw)
        assert await raw.send(raw.get(b"/c/conn1" + LIMITS, connection_id=False)) == [200]
        yield gw, trap, raw
        # Always last: a normal call still works, and the trap was never reached.
        assert await raw.send(raw.get(b"/proxy" + LIMITS)) == [200]
        assert trap.hits == 0


def _wire_safe(data: bytes) -> bool:
    # A raw CR/LF/space/NUL splits the request line itself: sent as its own framing cases.
    return not any(b in data for b in b"\r\n \x00\t")


async def test_the_ssrf_corpus_naming_the_trap_is_refused(
    rig: tuple[GatewayUnderTest, Trap, Raw],
) -> None:
    _gw, trap, raw = rig
    sent = 0
    for raw_path, query in SSRF_ATTEMPTS:
        path = raw_path.replace(b"evil.example", trap.hostport)
        target = path + (b"?" + query.replace(b"evil.example", trap.hostport) if query else b"")
        if not _wire_safe(target):
            continue
        statuses = await raw.send(raw.get(target))
        assert len(statuses) == 1, (target, statuses)
        assert 400 <= statuses[0] < 500, (target, statuses)
        sent += 1
    assert sent >= 40
    assert trap.hits == 0


async def test_host_and_forwarding_headers_never_choose_the_upstream(
    rig: tuple[GatewayUnderTest, Trap, Raw],
) -> None:
    gw, trap, raw = rig
    evil = trap.hostport
    log_before = len(gw.emulator.admin.requests(path="/services/data"))
    overrides = [
        b"X-Forwarded-Host: " + evil + b"\r\n",
        b"X-Forwarded-Host: " + evil + b"\r\nX-Forwarded-Proto: http\r\n",
        b"Forwarded: host=" + evil + b";proto=http\r\n",
        b"X-Original-URL: http://" + evil + b"/\r\nX-Rewrite-URL: http://" + evil + b"/\r\n",
        b"X-Forwarded-For: 127.0.0.2\r\nX-Real-IP: 127.0.0.2\r\n",
    ]
    answered = 0
    for extra in overrides:
        for target in (b"/proxy" + LIMITS, b"/c/conn1" + LIMITS):
            statuses = await raw.send(raw.get(target, extra))
            assert len(statuses) == 1, (extra, statuses)
            assert statuses[0] == 200 or 400 <= statuses[0] < 500, (extra, statuses)
            answered += statuses[0] == 200
    # Host itself pointing at the trap (the request line's target stays relative).
    host_evil = b"GET /proxy" + LIMITS + b" HTTP/1.1\r\nHost: " + evil + b"\r\n"
    statuses = await raw.send(
        host_evil + raw.auth + b"Connection-Id: conn1\r\nConnection: close\r\n\r\n"
    )
    assert statuses in ([200], [400]), statuses
    answered += statuses == [200]
    # Every answered call went to the connection's own instance: the emulator logged it.
    assert len(gw.emulator.admin.requests(path="/services/data")) - log_before == answered
    assert trap.hits == 0


async def test_absolute_form_targets_never_reach_the_named_host(
    rig: tuple[GatewayUnderTest, Trap, Raw],
) -> None:
    _gw, trap, raw = rig
    evil = b"http://" + trap.hostport
    for target in (
        evil + b"/",
        evil + b"/proxy" + LIMITS,
        evil + b"/c/conn1" + LIMITS,
        b"https://" + trap.hostport + b"/c/conn1" + LIMITS,
        b"//" + trap.hostport + b"/c/conn1" + LIMITS,
        trap.hostport + b"/c/conn1" + LIMITS,  # authority-form outside CONNECT
    ):
        statuses = await raw.send(raw.get(target))
        # Refused, or served from the connection's instance (the host is ignored).
        assert statuses == [] or len(statuses) == 1, (target, statuses)
        assert not statuses or statuses[0] in (200, 400, 404), (target, statuses)
    connect = b"CONNECT " + trap.hostport + b" HTTP/1.1\r\nHost: " + trap.hostport + b"\r\n\r\n"
    statuses = await raw.send(connect)
    assert statuses == [] or 400 <= statuses[0] < 500, statuses
    assert trap.hits == 0


def _post(raw: Raw, framing: bytes, body: bytes) -> bytes:
    return (
        b"POST /proxy/services/data/v60.0/sobjects/Account HTTP/1.1\r\nHost: gw\r\n" + raw.auth
        + b"Connection-Id: conn1\r\nContent-Type: application/json\r\n" + framing + b"\r\n" + body
    )  # fmt: skip


async def test_malformed_framing_and_headers_are_refused_without_a_smuggled_request(
    rig: tuple[GatewayUnderTest, Trap, Raw],
) -> None:
    gw, trap, raw = rig
    smuggled = raw.get(b"/c/conn1" + LIMITS + b"?smuggled=1")
    evil = trap.hostport
    many = b"".join(b"X-%d: v\r\n" % i for i in range(5000))
    chunked = b"0\r\n\r\n" + smuggled
    cases = {
        "CL then TE": _post(
            raw, b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", b"{}\r\n" + chunked
        ),
        "TE then CL": _post(
            raw, b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", chunked
        ),
        "TE obfuscated": _post(
            raw, b"Transfer-Encoding: xchunked\r\nContent-Length: 2\r\n", b"{}" + smuggled
        ),
        "TE twice": _post(
            raw,
            b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
            chunked,
        ),
        "duplicate CL": _post(
            raw, b"Content-Length: 2\r\nContent-Length: 40\r\n", b"{}" + smuggled
        ),
        "CL list": _post(raw, b"Content-Length: 2, 2\r\n", b"{}"),
        "CL negative": _post(raw, b"Content-Length: -1\r\n", b"{}"),
        "CL not a number": _post(raw, b"Content-Length: 2x\r\n", b"{}"),
        "CRLF in path": b"GET /proxy/services\r\nX-Evil: 1" + LIMITS + b" HTTP/1.1\r\n\r\n",
        "bare CR in header": raw.get(b"/proxy" + LIMITS, b"X-A: b\rHost: " + evil + b"\r\n"),
        "bare LF in header": raw.get(b"/proxy" + LIMITS, b"X-A: b\nHost: " + evil + b"\r\n"),
        "NUL in header": raw.get(b"/proxy" + LIMITS, b"X-A: b\x00c\r\n"),
        "obs-fold": raw.get(b"/proxy" + LIMITS, b"X-A: b\r\n  Host: " + trap.hostport + b"\r\n"),
        "space before colon": raw.get(b"/proxy" + LIMITS, b"Host : " + trap.hostport + b"\r\n"),
        "oversized header": raw.get(b"/proxy" + LIMITS, b"X-Big: " + b"a" * 200_000 + b"\r\n"),
        "many headers": raw.get(b"/proxy" + LIMITS, many),
        "space in target": b"GET /proxy/services /data HTTP/1.1\r\nHost: gw\r\n\r\n",
        "bad version": b"GET /proxy" + LIMITS + b" HTTP/9.9\r\nHost: gw\r\n\r\n",
    }  # fmt: skip
    log_before = gw.emulator.admin.requests(path="/services/data")
    outcomes = {}
    for name, data in cases.items():
        statuses = await raw.send(data, seconds=3.0)
        outcomes[name] = statuses
    print("\n" + "\n".join(f"{name}: {status or 'closed'}" for name, status in outcomes.items()))
    for name, statuses in outcomes.items():
        # At most ONE answer on the connection: the hidden request was never run.
        assert len(statuses) <= 1, (name, statuses)
        assert not statuses or 400 <= statuses[0] < 500, (name, statuses)
    # uvicorn's httptools sets no header limit: the gateway's own (server.py) answers 431.
    assert outcomes["oversized header"] == outcomes["many headers"] == [431]
    # Nothing reached Salesforce from these requests, smuggled or not.
    assert gw.emulator.admin.requests(path="/services/data") == log_before
    assert trap.hits == 0
