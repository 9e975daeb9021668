"""The proxy: a raw ASGI callable that forwards a call to its connection's Salesforce instance.

Per request: route and validate the path (:mod:`.paths`), check the client's API key
(:mod:`.auth`: a synchronous cache hit, kept honest about revocations), get the
connection's token from the :class:`~tokenkeep.proxy.source.TokenSource`, apply the org's
write pause (:mod:`.write_pause`), send the request upstream through the process's one
upstream client (:mod:`.upstream`: aiohttp or pyreqwest) with clean headers
(:mod:`.headers`), and relay the response chunk by chunk. Decisions are pure functions
elsewhere: what an answer says
(:func:`~tokenkeep.providers.salesforce_answers.read_api_answer`, only on error statuses),
whether to refresh and replay once (:mod:`.retry`), the cause word of an auth failure (the
token source's ``settle``: :mod:`tokenkeep.diagnosis`) and ``Retry-After``
(:mod:`.outcome`); the response is written by :mod:`.respond`. This module only moves bytes.

Bodies: up to ``settings.retry_buffer_bytes`` are buffered so the request can be replayed
once after a refresh. Larger bodies (by ``Content-Length``, or as soon as a chunked body
passes the limit) are streamed upstream as they arrive and are NOT replayed: when such a
call meets a dead session the token is still refreshed, and the client's own retry works.

Mounting: the server hands this app the unchanged scope of every request under ``/proxy/``
and ``/c/``; the routing reads ``scope["raw_path"]`` (the bytes the client sent).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from random import getrandbits
from typing import Any

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import OrgWritePausedError, TokenkeepError, UnauthorizedError
from tokenkeep.observability.logging import get_logger
from tokenkeep.observability.metrics import Metrics
from tokenkeep.observability.oplog import OperationQueue
from tokenkeep.orgs.health import OrgHealth
from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer, read_api_answer
from tokenkeep.proxy.auth import ApiKeyCheck, CallbackKeyCheck
from tokenkeep.proxy.body import Body, ClientGoneError, read_body
from tokenkeep.proxy.headers import scan_request, with_credentials
from tokenkeep.proxy.observe import CallRecorder, LimitInfo
from tokenkeep.proxy.outcome import NEEDS_VERDICT
from tokenkeep.proxy.paths import ProxyTarget, build_upstream_url, split_target
from tokenkeep.proxy.respond import Call, Receive, Scope, Send, relay, send_error
from tokenkeep.proxy.retry import PEEK_BYTES, Action, decide, is_write, needs_body
from tokenkeep.proxy.source import FreshToken, ProxiedFailure, TokenSource
from tokenkeep.proxy.upstream import (
    Upstream,
    UpstreamResponse,
    UpstreamTimeoutError,
    UpstreamUnreachableError,
    create_upstream,
    peek_body,
    send,
)
from tokenkeep.proxy.write_pause import (
    Admission,
    EventCallback,
    Outcome,
    WritePause,
    WritePauseGate,
)
from tokenkeep.vocabulary import Cause

__all__ = [
    "LimitInfo",
    "ProxyApp",
    "UpstreamTimeoutError",
    "UpstreamUnreachableError",
]

# A first answer of INVALID_SESSION_ID: a session error for org health.
_SESSION_ERRORS = frozenset({AnswerKind.SESSION_INVALID, AnswerKind.SESSION_UNUSABLE})


@dataclass(frozen=True, slots=True)
class _Request:
    """One proxied request, as the upstream attempts need it."""

    method: str
    target: ProxyTarget
    headers: list[tuple[str, str]]  # the client's, cleaned (no credentials)
    body: Body
    session_header: bool
    org_key: str  # the write-pause and limit key: org id, or instance_url if unknown


class ProxyApp:
    """The raw ASGI forwarding app (see the module docstring for the flow)."""

    def __init__(
        self,
        tokens: TokenSource,
        authenticate: ApiKeyCheck | Callable[[str], Awaitable[bool]],
        settings: Settings,
        clock: Clock,
        *,
        upstream: Upstream | None = None,
        on_event: EventCallback | None = None,
        logger: Any = None,
        auth_cache_seconds: float = 30.0,
        pool_limit: int = 512,
        pool_limit_per_host: int = 0,
        write_pause: WritePauseGate | None = None,
        org_health: OrgHealth | None = None,
        oplog: OperationQueue | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._tokens = tokens
        # A bare coroutine gets a positive cache of auth_cache_seconds (see proxy/auth.py).
        self._keys: ApiKeyCheck = (
            authenticate
            if isinstance(authenticate, ApiKeyCheck)
            else CallbackKeyCheck(authenticate, clock, auth_cache_seconds)
        )
        self._settings = settings
        self._clock = clock
        self._upstream: Upstream | None = upstream
        self._owns_upstream = upstream is None
        self._log = logger or get_logger("tokenkeep.proxy")
        self._metrics = metrics
        # The log line, operation-log entry, metrics and org-health counts of each call.
        self.recorder = CallRecorder(
            clock,
            self._log,
            log_query=settings.log_query,
            oplog=oplog,
            metrics=metrics,
            org_health=org_health,
        )
        # A token source may offer a synchronous cache look-up (the refresh coordinator
        # does): a cached, still-valid token then costs no coroutine per call.
        self._cached_token: Callable[[str], FreshToken | None] | None = getattr(
            tokens, "cached_token", None
        )
        self._pool_limit = pool_limit
        self._pool_limit_per_host = pool_limit_per_host
        # A gateway passes its shared pause and org health (tokenkeep.orgs); alone, the
        # proxy pauses in-process and counts nothing.
        self.write_pause: WritePauseGate = write_pause or WritePause(
            clock,
            settings.write_pause_probe_seconds,
            on_event=on_event,
            probe_timeout_seconds=settings.write_pause_probe_seconds
            + settings.upstream_timeout_seconds,
        )
        self.org_health = org_health

    # -- lifecycle (the :class:`tokenkeep.runtime.Service` protocol) ----------------------

    async def start(self) -> None:
        """Create the upstream client now (else it is created on the first call)."""
        self._client()

    async def stop(self) -> None:
        """Close the upstream client if this app created it."""
        if self._upstream is not None and self._owns_upstream:
            upstream, self._upstream = self._upstream, None
            await upstream.aclose()

    def _client(self) -> Upstream:
        if self._upstream is None:
            self._upstream = create_upstream(
                self._settings,
                pool_limit=self._pool_limit,
                pool_limit_per_host=self._pool_limit_per_host,
            )
            self._owns_upstream = True
        return self._upstream

    def limit_info(self, org_id: str) -> LimitInfo | None:
        """The last ``Sforce-Limit-Info`` header Salesforce sent for ``org_id``.

        Remembered from every relayed response (one dict write, no I/O), so org health
        (``GET /orgs/{org_id}``: API usage) can show it without a call of its own.
        """
        return self.recorder.limit_info(org_id)

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._handle(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock.monotonic()
        # A correlation id, not a secret: no os.urandom syscall per call.
        call = Call(f"{getrandbits(64):016x}", scope["method"], None)
        try:
            await self._proxy(scope, receive, send, call)
        except TokenkeepError as exc:
            await send_error(send, call, exc, self._clock.time())
        except ClientGoneError:
            call.status = 499  # nginx's word for "client closed the request"
        except Exception as exc:  # a bug: answer 500 with our body, log the type only
            self._log.error("proxy.internal_error", request_id=call.request_id, error=repr(exc))
            await send_error(
                send, call, TokenkeepError("Internal proxy error."), self._clock.time()
            )
        finally:
            self.recorder.finish(call, scope, self._clock.monotonic() - started)

    # -- the flow ----------------------------------------------------------------------

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, call: Call) -> None:
        scanned = scan_request(scope["headers"])
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        target = split_target(raw_path, scope.get("query_string", b""), scanned.connection_id)
        call.connection_id, call.path = target.connection_id, target.path
        if target.query:
            call.query = target.query.decode("latin-1")
        credential = scanned.credential
        if credential is None:
            raise UnauthorizedError("A valid tokenkeep API key is required (Bearer).")
        # The positive cache is checked synchronously: an await only on a miss.
        key, keys = credential.key, self._keys
        if not keys.cached(key) and not await keys.verify(key):
            raise UnauthorizedError("A valid tokenkeep API key is required (Bearer).")
        cached_token = self._cached_token
        token = cached_token(target.connection_id) if cached_token is not None else None
        if token is None:
            token = await self._tokens.token_for(target.connection_id)
        call.org_id, call.user_id = token.org_id, token.user_id
        call.integration = token.integration_key
        org_key = token.org_id or token.instance_url
        method = call.method
        admission = self.write_pause.admit(org_key, method)
        if admission is Admission.PROBE:  # the shared pause claims it for every gateway
            admission = await self.write_pause.claim_probe(org_key)
        if admission is Admission.REJECT:
            raise OrgWritePausedError(
                "Salesforce is in maintenance for this org: writes are paused.",
                retry_after=self.write_pause.retry_after(org_key),
            )
        outcome = Outcome.ABANDONED
        try:
            body = await read_body(
                method, scanned, receive, buffer_limit=self._settings.retry_buffer_bytes
            )
            outcome = Outcome.INCONCLUSIVE
            request = _Request(
                method, target, scanned.forward, body, scanned.used_session_header, org_key
            )
            answer = await self._exchange(send, call, request, token)
            # Org health: in-memory counts, flushed later.
            self.recorder.count_for_health(call, token.org_id, token.integration_key, org_key)
            if answer.kind is AnswerKind.MAINTENANCE:
                outcome = Outcome.MAINTENANCE
            elif call.status is not None and call.status < 400:
                outcome = Outcome.SUCCESS
        finally:
            if is_write(method) and (
                admission is Admission.PROBE or outcome is Outcome.MAINTENANCE
            ):
                await self.write_pause.record(
                    org_key,
                    admission,
                    outcome,
                    details={"connection_id": target.connection_id, "method": method},
                )

    async def _exchange(
        self, send: Send, call: Call, request: _Request, token: FreshToken
    ) -> ApiAnswer:
        """Send, maybe refresh and replay once, name the cause, relay the final response."""
        connection_id = request.target.connection_id
        response, head = await self._attempt(request, token)
        try:
            first = read_api_answer(response.status, head)
            call.session_error = first.kind in _SESSION_ERRORS
            if call.session_error and self.org_health is not None:
                # Seen now, so the diagnoses of a burst across an org see each other.
                self.org_health.note_failing(token.org_id, connection_id)
            cause: Cause | None = first.cause
            if first.kind in NEEDS_VERDICT:
                failure = ProxiedFailure(
                    connection_id, first, token, local_address=response.local_address
                )
                action = decide(first, replayable=request.body.replayable, replayed=False)
                if action is not Action.PASS:
                    fresh, error = await self._refresh(connection_id, token)
                    failure = replace(failure, refreshed=True, refresh_error=error, fresh=fresh)
                    if fresh is not None and action is Action.REFRESH_AND_REPLAY:
                        await response.aclose()
                        call.retried = True
                        response, head = await self._attempt(request, fresh)
                        failure = replace(failure, replay=read_api_answer(response.status, head))
                cause = await self._settle(failure)
                if failure.refresh_error is not None and failure.refresh_error.cause is None:
                    # The token endpoint is failing (5xx, timeout): our 503 + Retry-After,
                    # not Salesforce's 401 for a token we know is refused.
                    raise failure.refresh_error
                if failure.replay is not None:
                    first = failure.replay
                    call.recovered = first.kind is AnswerKind.OK
            call.cause = cause
            call.error_code = first.error_code
            self.recorder.remember_limits(request.org_key, response.raw_headers)
            await relay(send, call, response, head, cause, answer=first, log=self._log)
            return first
        finally:
            await response.aclose()

    async def _refresh(
        self, connection_id: str, token: FreshToken
    ) -> tuple[FreshToken | None, TokenkeepError | None]:
        try:
            return await self._tokens.refresh_after_rejection(connection_id, token.version), None
        except TokenkeepError as exc:
            if exc.cause is None:  # not a known-broken connection: worth a warning
                self._log.warning(
                    "proxy.refresh_failed", connection_id=connection_id, error_code=exc.code
                )
            return None, exc

    async def _settle(self, failure: ProxiedFailure) -> Cause | None:
        """The diagnosis of an auth failure (it records and acts on it); a failing
        diagnosis never fails the call: the cause is then ``unknown``."""
        try:
            return (await self._tokens.settle(failure)).cause
        except Exception as exc:
            self._log.warning(
                "proxy.diagnosis_failed", connection_id=failure.connection_id, error=repr(exc)
            )
            return Cause.UNKNOWN

    async def _attempt(
        self, request: _Request, token: FreshToken
    ) -> tuple[UpstreamResponse, bytes]:
        """One upstream request; returns the response and, when policy needs it, its head."""
        method, body = request.method, request.body
        url = build_upstream_url(
            token.instance_url,
            request.target,
            allow_insecure_loopback=self._settings.allow_insecure_loopback,
        )
        upstream_headers = with_credentials(
            request.headers,
            token.access_token.reveal(),
            session_header=request.session_header,
            content_length=body.length,
        )
        data: bytes | AsyncIterator[bytes] | None = (
            body.stream if body.stream is not None else body.data
        )
        sent = self._clock.monotonic()
        response = await send(
            self._client(),
            method,
            url,
            headers=upstream_headers,
            data=data,
            replayable=body.replayable,
        )
        if self._metrics is not None:
            self._metrics.upstream_seconds.observe(self._clock.monotonic() - sent)
        head = b""
        if needs_body(response.status, method):
            try:
                head = await peek_body(response, PEEK_BYTES)  # a cut answer: 502
            except BaseException:  # cancelled too: the connection (and its slot) goes back
                await response.aclose()
                raise
        return response, head
