"""Direct mode for your own HTTP code: ``httpx`` and ``requests`` auth plug-ins.

Both set ``Authorization: Bearer <token>`` from the gateway (``GET
/connections/{id}/token``), remember the token between calls, and when Salesforce says the
session is dead they renew it through the gateway (``POST /connections/{id}/refresh`` with
the refused token's ``rejected_version``) and replay the request once. The
decisions are the generators of :mod:`tokenkeep.client._policy`; this module only answers
their steps with real calls.

When the org moved (the renewed token carries another ``instance_url``), the replay and
every later request aimed at the instance the connection used to have go to the new one
(see ``on_instance_url`` to follow it in your own code). When the replay is refused again,
the refresh was not the fix: the plug-in reports the answer to the gateway (``POST
/connections/{id}/report``, best-effort) so it can tell the cause, and returns the refusal.

Request bodies must be replayable for the one retry (bytes, str, dict/JSON: the usual);
a streamed upload gets the refreshed token on the *next* call instead.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import httpx
import requests
from requests.auth import AuthBase

from tokenkeep.client._async_client import AsyncClient
from tokenkeep.client._client import Client
from tokenkeep.client._models import Token
from tokenkeep.client._policy import Fetch, Report, Send, Step, call_flow, wants_body
from tokenkeep.client._steps import AsyncSteps, Remembered, SyncSteps
from tokenkeep.clock import Clock

__all__ = ["TokenkeepAuth", "TokenkeepRequestsAuth"]


def _bearer(token: Token) -> str:
    return f"Bearer {token.access_token.reveal()}"


def _socket_address(stream: Any) -> str | None:
    # The local IP a connection left from, if the transport still knows it (best-effort:
    # the report's ``address`` is optional).
    try:
        name = stream.get_extra_info("client_addr") if stream is not None else None
    except Exception:
        return None
    return str(name[0]) if isinstance(name, tuple) and name else None


def _httpx_local_address(response: httpx.Response) -> str | None:
    return _socket_address(response.extensions.get("network_stream"))


def _requests_local_address(response: requests.Response) -> str | None:
    connection = getattr(response.raw, "connection", None)  # urllib3's, until released
    sock = getattr(connection, "sock", None)
    try:
        name = sock.getsockname() if sock is not None else None
    except OSError:
        return None
    return str(name[0]) if isinstance(name, tuple) and name else None


def _aim_httpx(request: httpx.Request, memory: Remembered, token: Token) -> None:
    url = str(request.url)
    moved = memory.aim(url, token)
    if moved != url:
        request.url = httpx.URL(moved)
        request.headers["Host"] = request.url.netloc.decode("ascii")


def _httpx_replayable(request: httpx.Request) -> bool:
    # httpx keeps bytes/str/JSON/form content as a ByteStream (sendable twice); iterators
    # and generators are consumed by the first send.
    return isinstance(request.stream, httpx.ByteStream)


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
        self._sync = SyncSteps(client, connection_id, clock) if isinstance(client, Client) else None
        self._async = AsyncSteps(client, connection_id, clock)
        # One history of instances for both drivers: a move seen by one is followed by both.
        if self._sync is not None:
            self._async.memory = self._sync.memory

    def on_instance_url(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(instance_url)`` when a renewed token names a new instance (the
        org moved): to rebuild a ``base_url`` you keep elsewhere, for instance."""
        self._async.memory.listeners.append(callback)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive :func:`~tokenkeep.client._policy.call_flow` with blocking calls."""
        steps = self._sync
        if steps is None:
            raise TypeError("TokenkeepAuth with an AsyncClient needs an httpx.AsyncClient")
        flow = call_flow(steps.memory.usable(), replayable=_httpx_replayable(request))
        address: str | None = None
        try:
            step = next(flow)
            while True:
                if isinstance(step, Send):
                    _aim_httpx(request, steps.memory, step.token)
                    request.headers["Authorization"] = _bearer(step.token)
                    response = yield request
                    address = _httpx_local_address(response)
                    body = response.read() if wants_body(response.status_code) else b""
                    step = flow.send((response.status_code, body))
                elif isinstance(step, Report):
                    steps.report(step, url=str(request.url), address=address)
                    step = flow.send(None)
                else:
                    step = flow.send(steps.answer(step))
        except StopIteration as done:
            steps.memory.remember(done.value)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive :func:`~tokenkeep.client._policy.call_flow` with awaited calls."""
        steps = self._async
        flow = call_flow(steps.memory.usable(), replayable=_httpx_replayable(request))
        address: str | None = None
        try:
            step = next(flow)
            while True:
                if isinstance(step, Send):
                    _aim_httpx(request, steps.memory, step.token)
                    request.headers["Authorization"] = _bearer(step.token)
                    response = yield request
                    address = _httpx_local_address(response)
                    body = await response.aread() if wants_body(response.status_code) else b""
                    step = flow.send((response.status_code, body))
                elif isinstance(step, Report):
                    await steps.report(step, url=str(request.url), address=address)
                    step = flow.send(None)
                else:
                    step = flow.send(await steps.answer(step))
        except StopIteration as done:
            steps.memory.remember(done.value)


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
        self._steps = SyncSteps(client, connection_id, clock)

    @property
    def token(self) -> Token | None:
        """The token the last call used (``None`` before the first call)."""
        return self._steps.memory.token

    def prime(self) -> Token:
        """Fetch and remember the connection's current token now (typed errors if refused)."""
        return self._steps.answer(Fetch())

    def on_instance_url(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(instance_url)`` when a renewed token names a new instance (the
        org moved); :func:`~tokenkeep.client.simple_salesforce` uses it to move its URLs."""
        self._steps.memory.listeners.append(callback)

    def _token_for(self, flow: Generator[Step, Any, Token], step: Step) -> Send:
        # Before the first send the flow only asks for a token.
        while not isinstance(step, Send):
            if isinstance(step, Report):
                raise RuntimeError("call_flow reports only after a send")
            step = flow.send(self._steps.answer(step))
        return step

    def _next_send(
        self,
        flow: Generator[Step, Any, Token],
        step: Step,
        seen: requests.Response,
        address: str | None,
    ) -> Send | None:
        """Answer steps up to the next :class:`Send`; ``None`` when the flow is done."""
        try:
            while not isinstance(step, Send):
                if isinstance(step, Report):
                    self._steps.report(step, url=seen.request.url or "", address=address)
                    step = flow.send(None)
                else:
                    step = flow.send(self._steps.answer(step))
        except StopIteration as done:
            self._steps.memory.remember(done.value)
            return None
        return step

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        # requests keeps bytes/str bodies on the prepared request; a generator or a file
        # is consumed by the first send.
        replayable = r.body is None or isinstance(r.body, bytes | str)
        flow = call_flow(self._steps.memory.usable(), replayable=replayable)
        send = self._token_for(flow, next(flow))
        if r.url:
            r.url = self._steps.memory.aim(r.url, send.token)
        r.headers["Authorization"] = _bearer(send.token)

        def on_response(response: requests.Response, **kwargs: Any) -> requests.Response:
            return self._after(flow, response, **kwargs)

        r.register_hook("response", on_response)
        return r

    def _answer(self, response: requests.Response) -> tuple[int, bytes]:
        status = response.status_code
        return status, response.content if wants_body(status) else b""

    def _after(
        self, flow: Generator[Step, Any, Token], response: requests.Response, **kwargs: Any
    ) -> requests.Response:
        address = _requests_local_address(response)  # before the body releases the socket
        try:
            send = self._next_send(flow, flow.send(self._answer(response)), response, address)
        except StopIteration as done:
            self._steps.memory.remember(done.value)
            return response
        except BaseException:
            response.close()  # the gateway refused to renew: give the connection back
            raise
        if send is None:
            return response
        # The replay: same prepared request (body bytes are replayable), new token, and the
        # new host if the org moved.
        response.close()
        replay = response.request.copy()
        if replay.url:
            replay.url = self._steps.memory.aim(replay.url, send.token)
        replay.headers["Authorization"] = _bearer(send.token)
        adapter = response.connection  # set by HTTPAdapter.build_response
        retried: requests.Response = adapter.send(replay, **kwargs)
        retried.history.append(response)
        retried.request = replay
        address = _requests_local_address(retried)
        try:
            self._next_send(flow, flow.send(self._answer(retried)), retried, address)
        except StopIteration as done:
            self._steps.memory.remember(done.value)
        return retried
