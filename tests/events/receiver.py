"""A real webhook receiver on 127.0.0.1 (aiohttp), scripted per request."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tokenkeep.server import free_port


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """``statuses``: the answers to give, in order (then ``default``); ``hang``: how many
    first requests to leave unanswered until :meth:`release`; ``delay``: seconds per
    answer."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    default: int = 200
    hang: int = 0
    delay: float = 0.0
    got: list[Received] = field(default_factory=list)
    on_request: Callable[[Received], None] | None = None
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self._released.set()

    async def handle(self, request: web.Request) -> web.Response:
        received = Received(
            {k.lower(): v for k, v in request.headers.items()}, await request.read()
        )
        self.got.append(received)
        if self.on_request is not None:
            self.on_request(received)
        if self.hang > 0:
            self.hang -= 1
            await self._released.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else self.default
        return web.Response(status=status, text="ok")

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.got]


@contextlib.asynccontextmanager
async def receiving(**options: Any) -> AsyncIterator[Receiver]:
    """A running :class:`Receiver` at ``receiver.url`` (``http://127.0.0.1:<port>/hook``)."""
    receiver = Receiver(**options)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        receiver.release()
        await runner.cleanup()


async def eventually(check: Callable[[], Any], *, within: float = 10.0, step: float = 0.02) -> None:
    """Wait until ``check()`` (sync or async) is truthy; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if loop.time() - start > within:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(step)
