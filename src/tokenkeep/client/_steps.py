"""Answering the policy's steps with real gateway calls, for the auth plug-ins.

:class:`SyncSteps` (a :class:`Client`) and :class:`AsyncSteps` (an :class:`AsyncClient`, or
a :class:`Client` in a thread) fetch, refresh and renew tokens and send reports; the
:class:`Remembered` token and instance history is what one auth object shares between its
concurrent calls. Nothing here decides anything: :mod:`tokenkeep.client._policy` does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from tokenkeep.client._async_client import AsyncClient
from tokenkeep.client._client import Client
from tokenkeep.client._models import Token
from tokenkeep.client._policy import Fetch, Refresh, Renew, Report, aimed, origin, renew_flow
from tokenkeep.clock import Clock, SystemClock
from tokenkeep.errors import TokenkeepError

__all__ = ["AsyncSteps", "Remembered", "SyncSteps"]

_log = logging.getLogger("tokenkeep.client")

# A remembered token this close to its expiry estimate is fetched again instead of used.
_EXPIRY_MARGIN_SECONDS = 30.0


class Remembered:
    """The last token one auth object used, shared by its concurrent calls, and the
    instances the connection lived on before (the origins a move may be followed from)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.token: Token | None = None
        self.former: set[str] = set()
        self.listeners: list[Callable[[str], None]] = []
        self._instance: str | None = None  # kept when ``token`` is dropped

    def remember(self, token: Token | None) -> None:
        """Keep ``token`` (``None``: ask the gateway next time); note an instance move."""
        self.token = token
        if token is None:
            return
        previous, self._instance = self._instance, origin(token.instance_url)
        if previous is None or previous == self._instance:
            return
        self.former.add(previous)
        self.former.discard(self._instance)  # moved back: that host is current again
        for listener in list(self.listeners):
            listener(token.instance_url)

    def aim(self, url: str, token: Token) -> str:
        """``url``, moved onto ``token``'s instance if it points at a former one."""
        return aimed(url, token.instance_url, self.former) if self.former else url

    def usable(self) -> Token | None:
        token = self.token
        if token is None or token.expires_at is None:
            return token
        if token.expires_at.timestamp() - self.clock.time() < _EXPIRY_MARGIN_SECONDS:
            return None
        return token


class SyncSteps:
    """Answers policy steps with a synchronous :class:`Client` (one renewal at a time)."""

    def __init__(self, client: Client, connection_id: str, clock: Clock | None) -> None:
        self.client = client
        self.connection_id = connection_id
        self.memory = Remembered(clock or SystemClock())
        self._renewing = threading.Lock()

    @staticmethod
    def token_from(client: Client, connection_id: str, step: Fetch | Refresh) -> Token:
        """One blocking gateway call for ``step``."""
        if isinstance(step, Refresh):
            return client.refresh_connection(connection_id, rejected_version=step.rejected_version)
        return client.get_token(connection_id)

    def token(self, step: Fetch | Refresh) -> Token:
        return self.token_from(self.client, self.connection_id, step)

    def renew(self, step: Renew) -> Token:
        # One renewal per auth object at a time: concurrent calls that all saw the same
        # dead token wait here, then find the renewed one remembered and use it.
        with self._renewing:
            flow = renew_flow(step.rejected, self.memory.token)
            try:
                sub = next(flow)
                while True:
                    sub = flow.send(self.token(sub))
            except StopIteration as done:
                renewed: Token = done.value
        self.memory.remember(renewed)
        return renewed

    def answer(self, step: Fetch | Refresh | Renew) -> Token:
        """Answer a token step (and remember the token)."""
        try:
            token = self.renew(step) if isinstance(step, Renew) else self.token(step)
        except TokenkeepError:
            # The gateway refused (needs_reauth, action_required...): the remembered token
            # is no good either, so the next call asks the gateway first and fails fast.
            # No report then: the gateway already knows.
            self.memory.remember(None)
            raise
        self.memory.remember(token)
        return token

    def report(self, step: Report, *, url: str, address: str | None) -> None:
        """Send ``step`` to the gateway; a failure (an older gateway's 404 too) is logged."""
        try:
            self.client.report(
                self.connection_id,
                status=step.status,
                body=step.body,
                host=origin(url),
                address=address,
                version=step.token.version,
            )
        except Exception as exc:
            _log.debug("tokenkeep: report for %s not delivered: %r", self.connection_id, exc)


class AsyncSteps:
    """Answers policy steps with an :class:`AsyncClient` (or a sync :class:`Client` in a thread)."""

    def __init__(
        self, client: AsyncClient | Client, connection_id: str, clock: Clock | None
    ) -> None:
        self.client = client
        self.connection_id = connection_id
        self.memory = Remembered(clock or SystemClock())
        self._renewing: asyncio.Lock | None = None

    async def token(self, step: Fetch | Refresh) -> Token:
        client = self.client
        if isinstance(client, Client):
            return await asyncio.to_thread(SyncSteps.token_from, client, self.connection_id, step)
        if isinstance(step, Refresh):
            return await client.refresh_connection(
                self.connection_id, rejected_version=step.rejected_version
            )
        return await client.get_token(self.connection_id)

    async def renew(self, step: Renew) -> Token:
        if self._renewing is None:  # created lazily: it binds to the running loop
            self._renewing = asyncio.Lock()
        async with self._renewing:
            flow = renew_flow(step.rejected, self.memory.token)
            try:
                sub = next(flow)
                while True:
                    sub = flow.send(await self.token(sub))
            except StopIteration as done:
                renewed: Token = done.value
        self.memory.remember(renewed)
        return renewed

    async def answer(self, step: Fetch | Refresh | Renew) -> Token:
        """Answer a token step (and remember the token)."""
        try:
            token = await (self.renew(step) if isinstance(step, Renew) else self.token(step))
        except TokenkeepError:
            self.memory.remember(None)  # as in the sync twin: fail fast next time
            raise
        self.memory.remember(token)
        return token

    async def report(self, step: Report, *, url: str, address: str | None) -> None:
        """See :meth:`SyncSteps.report`."""
        options: dict[str, Any] = {
            "status": step.status,
            "body": step.body,
            "host": origin(url),
            "address": address,
            "version": step.token.version,
        }
        client = self.client
        try:
            if isinstance(client, Client):
                await asyncio.to_thread(lambda: client.report(self.connection_id, **options))
            else:
                await client.report(self.connection_id, **options)
        except Exception as exc:
            _log.debug("tokenkeep: report for %s not delivered: %r", self.connection_id, exc)
