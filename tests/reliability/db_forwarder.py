"""A TCP forwarder in front of PostgreSQL that a test can switch off (a database outage).

While ``down``, every open connection is cut and new ones are accepted and closed at once
(the driver sees "server closed the connection unexpectedly"). While ``stalled``, the
forwarder keeps every connection open and accepts new ones but forwards no byte (a link
that hangs: the driver waits); :meth:`stall` ends it by resuming or by dropping the link.
Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import make_url


class DbForwarder:
    """``127.0.0.1:<port>`` → ``upstream``; :meth:`down` / :meth:`up` switch it."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.is_down = False
        #: Connection ends cut by :meth:`down` so far (both sides of each link).
        self.cut = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def down(self) -> None:
        """Cut every connection and refuse new ones until :meth:`up`."""
        self.is_down = True
        self.cut += len(self._open)
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def up(self) -> None:
        self.is_down = False

    async def outage(self, seconds: float) -> None:
        """Down for ``seconds``, then up again."""
        self.down()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.up()

    async def stall(self, seconds: float, *, then: str = "resume") -> None:
        """Forward nothing for ``seconds``; then ``"resume"`` (the held bytes flow on) or
        ``"drop"`` (every connection cut, as :meth:`down`, and new ones served again)."""
        self._flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            if then == "drop":
                self.down()
                self.up()
            self._flowing.set()

    def url_for(self, db_url: str) -> str:
        """``db_url`` with its host and port replaced by this forwarder's."""
        url = make_url(db_url).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # the test's loop is closing
        for w in (writer, up_writer):
            self._open.discard(w)
            w.transport.abort()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                if self.is_down or dst.transport.is_closing():
                    break
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()


@contextlib.asynccontextmanager
async def forwarding(db_url: str) -> AsyncIterator[DbForwarder]:
    """A started forwarder to ``db_url``'s server (stopped at exit)."""
    url = make_url(db_url)
    forwarder = DbForwarder(url.host or "127.0.0.1", url.port or 5432)
    await forwarder.start()
    try:
        yield forwarder
    finally:
        await forwarder.stop()
