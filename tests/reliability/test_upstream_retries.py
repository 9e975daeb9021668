"""A dropped upstream connection never sends a write twice (issue 13, defect 8).

aiohttp resends a request once when a connection drops before the answer
(``aiohttp/client.py``: ``retry_persistent_connection``, for ``IDEMPOTENT_METHODS``, which
include PUT and DELETE): 100 client calls against an upstream that cuts connections made
200 upstream calls, and a PUT or DELETE could be applied twice. Now the transport never
resends a write (POST, PATCH, PUT, DELETE); a read is resent at most once, by the proxy's
own rule (:func:`tokenkeep.proxy.retry.resend_after_drop`).

The upstream here is a raw asyncio server on 127.0.0.1 that counts every request it reads:
``cut`` mode closes the connection after reading each request, without an answer;
``stale`` mode answers the first request of a connection (keep-alive) and closes after
reading the next one, as a server that timed an idle keep-alive connection out does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import aiohttp
import httpx
import pytest
from tests.proxy.proxy_support import API_KEY, EmulatorTokens, proxy_settings, running_proxy

from tokenkeep.proxy.upstream_aiohttp import create_upstream_session, transport_resends_disabled

# The proxy's behaviour holds for each upstream client (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("upstream_client")

WRITES = ("POST", "PATCH", "PUT", "DELETE")
TOKEN = "00Dxx0000001gPL!AQ4AQUPSTREAMTOKENxyz"
PATH = "/services/data/v60.0/sobjects/Account/001xx000003DGb2AAG"
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


class CuttingUpstream:
    """Counts the requests it reads; ``mode`` says when it cuts the connection."""

    def __init__(self, mode: Literal["cut", "stale"]) -> None:
        self.mode = mode
        self.seen: list[str] = []  # the method of every request read
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.seen.append(head.split(b" ", 1)[0].decode())
                if self.mode == "stale" and answered == 0:
                    writer.write(OK)
                    await writer.drain()
                    answered += 1
                    continue
                return  # read, never answered: the connection is cut
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingUpstream]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            yield self
        finally:
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def proxied(upstream: CuttingUpstream) -> AsyncIterator[httpx.AsyncClient]:
    tokens = EmulatorTokens()
    tokens.add_static("acme", upstream.url, TOKEN, org_id="00Dxx0000001gPLEAY")
    async with (
        running_proxy(tokens) as (url, _app),
        httpx.AsyncClient(
            base_url=f"{url}/c/acme", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
        ) as client,
    ):
        yield client


def _json(method: str) -> dict[str, str] | None:
    return {"Name": "Acme"} if method in ("POST", "PATCH", "PUT") else None


async def test_100_writes_to_an_upstream_that_cuts_connections_are_sent_100_times() -> None:
    async with CuttingUpstream("cut").running() as upstream, proxied(upstream) as client:
        answers = await asyncio.gather(
            *(
                client.request(method, PATH, json=_json(method))
                for method in WRITES
                for _ in range(25)
            )
        )
    assert len(upstream.seen) == 100
    assert sorted(upstream.seen) == sorted(m for m in WRITES for _ in range(25))
    for answer in answers:
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["code"] == "upstream_unreachable"
        assert "may have been applied" in error["message"]
        # Whether to try a write again is the client's call (it may have been applied).
        assert "retry-after" not in answer.headers


async def test_a_read_is_resent_at_most_once() -> None:
    async with CuttingUpstream("cut").running() as upstream, proxied(upstream) as client:
        answers = await asyncio.gather(*(client.get(PATH) for _ in range(100)))
    assert len(upstream.seen) == 200  # each read: the call and ONE resend, never more
    assert {a.status_code for a in answers} == {502}
    assert answers[0].json()["error"]["code"] == "upstream_unreachable"


@pytest.mark.parametrize("method", WRITES)
async def test_a_write_on_a_stale_keepalive_connection_is_not_resent(method: str) -> None:
    async with CuttingUpstream("stale").running() as upstream, proxied(upstream) as client:
        first = await client.request(method, PATH, json=_json(method))
        assert first.status_code == 200
        second = await client.request(method, PATH, json=_json(method))
    assert upstream.seen == [method, method]  # the second write reached upstream ONCE
    assert second.status_code == 502
    assert second.json()["error"]["code"] == "upstream_unreachable"


async def test_a_read_on_a_stale_keepalive_connection_is_resent_once_and_succeeds() -> None:
    async with CuttingUpstream("stale").running() as upstream, proxied(upstream) as client:
        assert (await client.get(PATH)).status_code == 200
        assert (await client.get(PATH)).status_code == 200
    assert upstream.seen == ["GET", "GET", "GET"]


async def test_the_upstream_session_itself_never_resends_a_write() -> None:
    """Catches an aiohttp upgrade that renames or changes the private switch we set."""
    assert "_retry_connection" in aiohttp.ClientSession.ATTRS
    async with CuttingUpstream("cut").running() as upstream:
        session = create_upstream_session(proxy_settings())
        try:
            assert transport_resends_disabled(session)
            for method in ("PUT", "DELETE", "GET"):
                with pytest.raises(aiohttp.ServerDisconnectedError):
                    async with session.request(method, upstream.url + PATH):
                        pass
        finally:
            await session.close()
    assert upstream.seen == ["PUT", "DELETE", "GET"]
