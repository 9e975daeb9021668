"""Direct mode for your own HTTP code: ``httpx`` and ``requests`` auth plug-ins.

Both set ``Authorization: Bearer <token>`` from the gateway (``GET
/connections/{id}/token``), remember the token between calls, and when Salesforce says the
session is dead they renew it through the gateway (``POST /connections/{id}/refresh`` with
the refused token's ``rejected_version``) and replay the request once. The
decisions are the generators of :mod:`tokenkeep.client._policy`; this module only answers
their steps with real calls.

Request bodies must be replayable for the one retry (bytes, str, dict/JSON: the usual);
a streamed upload gets the refreshed token on the *next* call instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx
import requests
from requests.auth import AuthBase

from tokenkeep.client._async_client import AsyncClient
from tokenkeep.client._client import Client
from tokenkeep.client._models import Token
from tokenkeep.client._policy import (
    Fetch,
    Refresh,
    Renew,
    Send,
    Step,
    call_flow,
    renew_flow,
    wants_body,
)
from tokenkeep.clock import Clock, SystemClock
from tokenkeep.errors import TokenkeepError

__all__ = ["TokenkeepAuth", "TokenkeepRequestsAuth"]

# A remembered token this close to its expiry estimate is fetched again instead of used.
_EXPIRY_MARGIN_SECONDS = 30.0


class _Remembered:
    """The last token one auth object used, shared by its concurrent calls."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.token: Token | None = None

    def usable(self) -> Token | None:
        token = self.token
        if token is None or token.expires_at is None:
            return token
        if token.expires_at.timestamp() - self.clock.time() < _EXPIRY_MARGIN_SECONDS:
            return None
        return token


def _bearer(token: Token) -> str:
    return f"Bearer {token.access_token.reveal()}"


def _httpx_replayable(request: httpx.Request) -> bool:
    # httpx keeps bytes/str/JSON/form content as a ByteStream (sendable twice); iterators
    # and generators are consumed by the first send.
    return isinstance(request.stream, httpx.ByteStream)


class _SyncSteps:
    """Answers policy steps with a synchronous :class:`Client` (one renewal at a time)."""

    def __init__(self, client: Client, connection_id: str, clock: Clock | None) -> None:
        self.client = client
        self.connection_id = connection_id
        self.memory = _Remembered(clock or SystemClock())
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
        self.memory.token = renewed
        return renewed

    def answer(self, step: Fetch | Refresh | Renew) -> Token:
        """Answer a step that is not a :class:`Send` (and remember the token)."""
        try:
            token = self.renew(step) if isinstance(step, Renew) else self.token(step)
        except TokenkeepError:
            # The gateway refused (needs_reauth, action_required...): the remembered token
            # is no good either, so the next call asks the gateway first and fails fast.
            self.memory.token = None
            raise
        self.memory.token = token
        return token


class _AsyncSteps:
    """Answers policy steps with an :class:`AsyncClient` (or a sync :class:`Client` in a thread)."""

    def __init__(
        self, client: AsyncClient | Client, connection_id: str, clock: Clock | None
    ) -> None:
        self.client = client
        self.connection_id = connection_id
        self.memory = _Remembered(clock or SystemClock())
        self._renewing: asyncio.Lock | None = None

    async def token(self, step: Fetch | Refresh) -> Token:
        client = self.client
        if isinstance(client, Client):
            return await asyncio.to_thread(_SyncSteps.token_from, client, self.connection_id, step)
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
        self.memory.token = renewed
        return renewed

    async def answer(self, step: Fetch | Refresh | Renew) -> Token:
        """Answer a step that is not a :class:`Send` (and remember the token)."""
        try:
            token = await (self.renew(step) if isinstance(step, Renew) else self.token(step))
        except TokenkeepError:
            self.memory.token = None  # as in the sync twin: fail fast next time
            raise
        self.memory.token = token
        return token


class TokenkeepAuth(httpx.Auth):
    """``httpx`` auth for a connection in direct mode (works with ``httpx.Client`` and
    ``httpx.AsyncClient``)::

        tk = tokenkeep.client.Client("http://127.0.0.1:8400", api_key)
        auth = TokenkeepAuth(tk, "acme")
        token = tk.get_token("acme")
        with httpx.Client(base_url=token.instance_url, auth=auth) as sf:
            sf.get("/services/data/v60.0/query", params={"q": "SELECT Id FROM Account"})

    With an ``httpx.AsyncClient``, pass an :class:`AsyncClient` (a sync :class:`Client` also
    works: its calls run in a thread). ``clock`` is for tests (expiry estimates).
    """

    def __init__(
        self, client: Client | AsyncClient, connection_id: str, *, clock: Clock | None = None
    ) -> None:
        self.connection_id = connection_id
        self._sync = (
            _SyncSteps(client, connection_id, clock) if isinstance(client, Client) else None
        )
        self._async = _AsyncSteps(client, connection_id, clock)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive :func:`~tokenkeep.client._policy.call_flow` with blocking calls."""
        steps = self._sync
        if steps is None:
            raise TypeError("TokenkeepAuth with an AsyncClient needs an httpx.AsyncClient")
        flow = call_flow(steps.memory.usable(), replayable=_httpx_replayable(request))
        try:
            step = next(flow)
            while True:
                if isinstance(step, Send):
                    request.headers["Authorization"] = _bearer(step.token)
                    response = yield request
                    body = response.read() if wants_body(response.status_code) else b""
                    step = flow.send((response.status_code, body))
                else:
                    step = flow.send(steps.answer(step))
        except StopIteration as done:
            steps.memory.token = done.value

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive :func:`~tokenkeep.client._policy.call_flow` with awaited calls."""
        steps = self._async
        flow = call_flow(steps.memory.usable(), replayable=_httpx_replayable(request))
        try:
            step = next(flow)
            while True:
                if isinstance(step, Send):
                    request.headers["Authorization"] = _bearer(step.token)
                    response = yield request
                    body = await response.aread() if wants_body(response.status_code) else b""
                    step = flow.send((response.status_code, body))
                else:
                    step = flow.send(await steps.answer(step))
        except StopIteration as done:
            steps.memory.token = done.value


class TokenkeepRequestsAuth(AuthBase):
    """``requests`` auth for a connection in direct mode::

        session = requests.Session()
        session.auth = TokenkeepRequestsAuth(tk, "acme")

    The token is set when the request is prepared; a response hook renews it and replays
    the request once on a dead session (the replay goes through the same adapter, so it
    is not hooked again).
    """

    def __init__(self, client: Client, connection_id: str, *, clock: Clock | None = None) -> None:
        self.connection_id = connection_id
        self._steps = _SyncSteps(client, connection_id, clock)

    @property
    def token(self) -> Token | None:
        """The token the last call used (``None`` before the first call)."""
        return self._steps.memory.token

    def prime(self) -> Token:
        """Fetch and remember the connection's current token now (typed errors if refused)."""
        return self._steps.answer(Fetch())

    def _until_send(self, flow: Generator[Step, Any, Token], step: Step) -> Send:
        while not isinstance(step, Send):
            step = flow.send(self._steps.answer(step))
        return step

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        # requests keeps bytes/str bodies on the prepared request; a generator or a file
        # is consumed by the first send.
        replayable = r.body is None or isinstance(r.body, bytes | str)
        flow = call_flow(self._steps.memory.usable(), replayable=replayable)
        send = self._until_send(flow, next(flow))
        r.headers["Authorization"] = _bearer(send.token)

        def on_response(response: requests.Response, **kwargs: Any) -> requests.Response:
            return self._after(flow, response, **kwargs)

        r.register_hook("response", on_response)
        return r

    def _after(
        self, flow: Generator[Step, Any, Token], response: requests.Response, **kwargs: Any
    ) -> requests.Response:
        status = response.status_code
        try:
            step = flow.send((status, response.content if wants_body(status) else b""))
            send = self._until_send(flow, step)
        except StopIteration as done:
            self._steps.memory.token = done.value
            return response
        except BaseException:
            response.close()  # the gateway refused to renew: give the connection back
            raise
        # The replay: same prepared request (body bytes are replayable), new token.
        response.close()
        replay = response.request.copy()
        replay.headers["Authorization"] = _bearer(send.token)
        adapter = response.connection  # set by HTTPAdapter.build_response
        retried: requests.Response = adapter.send(replay, **kwargs)
        retried.history.append(response)
        retried.request = replay
        try:
            flow.send((retried.status_code, b""))
        except StopIteration as done:
            self._steps.memory.token = done.value
        return retried
