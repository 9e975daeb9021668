"""The webhook delivery worker: a gateway service that empties the outbox.

Each cycle (every ``TOKENKEEP_WEBHOOK_POLL_SECONDS``, straight on while a batch was full):

1. **fan out** new outbox events into one delivery per matching endpoint;
2. **claim** a batch of due deliveries (a lease in the database: several gateways never
   send the same delivery at the same time, and a crashed gateway's claims expire);
3. **send** each (8 at a time): check the target again (SSRF: DNS may have changed),
   sign, POST with a timeout on our clock; a 2xx is delivered, anything else (another
   status, a redirect, a refused target, a connection error, the timeout) is a failed
   attempt retried with full-jitter exponential backoff until
   ``TOKENKEEP_WEBHOOK_MAX_AGE_SECONDS`` after the round began, then ``failed``. Every
   attempt is an operation-log entry (kind ``webhook``).

Delivery is at least once (a receiver drops duplicates by ``webhook-id``) and **in no
promised order**, not even per endpoint: retries and several gateways interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
from dataclasses import dataclass

import aiohttp

from tokenkeep.__about__ import __version__
from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import TokenkeepError
from tokenkeep.events.backoff import next_attempt_at
from tokenkeep.events.envelope import envelope_body
from tokenkeep.events.signer import signed_headers
from tokenkeep.events.targets import GuardedResolver, webhook_target_problem
from tokenkeep.observability.logging import get_logger
from tokenkeep.observability.metrics import Metrics
from tokenkeep.secret import Secret
from tokenkeep.store import Store
from tokenkeep.store.deliveries import DueDelivery
from tokenkeep.store.webhooks import WebhookEndpoint

__all__ = ["Attempt", "WebhookWorker"]

_log = get_logger("tokenkeep.webhooks")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST got: a status code, or an error in words."""

    status_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookWorker:
    """Fan out, claim and send webhook deliveries until stopped (a gateway ``Service``)."""

    def __init__(
        self,
        store: Store,
        *,
        settings: Settings,
        clock: Clock,
        rng: random.Random | None = None,
        owner: str | None = None,
        concurrency: int = 8,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.owner = owner or "webhooks:" + secrets.token_hex(6)
        self.concurrency = concurrency
        self.batch_size = settings.webhook_batch_size
        self.timeout = settings.webhook_timeout_seconds
        # A claim must outlast the whole batch it belongs to, each send taking up to the
        # timeout, `concurrency` at a time, plus the database writes around them.
        self.lease_seconds = self.timeout * (math.ceil(self.batch_size / concurrency) + 1) + 30
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    # -- service --------------------------------------------------------------------------
    async def start(self) -> None:
        """Sync the ``TOKENKEEP_WEBHOOK_URL`` endpoint, then deliver in the background."""
        secret = self.settings.webhook_secret
        await self.store.webhooks.sync_settings_endpoint(
            self.settings.webhook_url,
            Secret(secret.get_secret_value()) if secret is not None else None,
        )
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self.run_forever(), name="webhook-worker")

    async def stop(self) -> None:
        """Stop after the sends in flight (unsent claims are given back)."""
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_http()

    def wake(self) -> None:
        """Start the next cycle now instead of after the poll interval."""
        self._wake.set()

    async def run_forever(self) -> None:
        """Cycle until stopped."""
        _log.info("webhook worker started", owner=self.owner)
        while not self._stop.is_set():
            try:
                sent = await self.run_once()
            except TokenkeepError as exc:  # database away: try again next interval
                _log.warning("webhook cycle failed", error=str(exc))
                sent = 0
            except Exception:
                _log.exception("webhook cycle crashed")
                sent = 0
            if sent >= self.batch_size:
                continue
            await self._pause(self.settings.webhook_poll_seconds)
        _log.info("webhook worker stopped", owner=self.owner)

    async def _pause(self, seconds: float) -> None:
        waits = [
            asyncio.ensure_future(self.clock.sleep(seconds)),
            asyncio.ensure_future(self._stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in waits:
                fut.cancel()
            self._wake.clear()

    # -- one cycle ------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Fan out new events, claim one batch and send it; how many were claimed."""
        now = self.clock.now()
        if not await self.store.deliveries.has_work(now):
            return 0
        await self.store.deliveries.fan_out(now=now, limit=self.batch_size * 4)
        claimed = await self.store.deliveries.claim_due(
            now=now, limit=self.batch_size, owner=self.owner, lease_seconds=self.lease_seconds
        )
        if not claimed:
            return 0
        endpoints = {e.id: e for e in await self.store.webhooks.list(with_secrets=True)}
        gate = asyncio.Semaphore(self.concurrency)
        unsent = {d.id for d in claimed}

        async def one(delivery: DueDelivery) -> None:
            async with gate:
                if self._stop.is_set():
                    return
                unsent.discard(delivery.id)
                endpoint = endpoints.get(delivery.endpoint_id)
                if endpoint is None:  # deleted meanwhile: its deliveries went with it
                    return
                await self.deliver(delivery, endpoint)

        try:
            await asyncio.gather(*(one(d) for d in claimed))
        finally:
            if unsent:
                await self.store.deliveries.release(sorted(unsent), self.owner)
        return len(claimed)

    async def deliver(self, delivery: DueDelivery, endpoint: WebhookEndpoint) -> str:
        """Make one attempt and record it; the outcome word of the log entry."""
        started = self.clock.monotonic()
        attempt = await self._attempt(delivery, endpoint)
        now = self.clock.now()
        next_at = None
        if not attempt.delivered:
            next_at = next_attempt_at(
                attempts=delivery.attempts + 1,
                queued_at=delivery.queued_at,
                now=now,
                base_seconds=self.settings.webhook_backoff_base_seconds,
                cap_seconds=self.settings.webhook_backoff_cap_seconds,
                max_age_seconds=self.settings.webhook_max_age_seconds,
                rng=self.rng,
            )
        outcome = await self.store.deliveries.finish(
            delivery,
            owner=self.owner,
            now=now,
            delivered=attempt.delivered,
            next_at=next_at,
            status_code=attempt.status_code,
            error=attempt.error,
            duration_ms=round((self.clock.monotonic() - started) * 1000, 3),
        )
        if self.metrics is not None:
            self.metrics.webhook_attempts.labels(outcome).inc()
            if not attempt.delivered:
                self.metrics.webhook_failures.inc()
        _log.info(
            "webhook attempt",
            outcome=outcome,
            event_id=delivery.event_id,
            endpoint_id=delivery.endpoint_id,
            attempt=delivery.attempts + 1,
            status_code=attempt.status_code,
            error=attempt.error,
        )
        return outcome

    async def _attempt(self, delivery: DueDelivery, endpoint: WebhookEndpoint) -> Attempt:
        problem = await webhook_target_problem(
            endpoint.url, allow_private=self.settings.allow_insecure_loopback
        )
        if problem is not None:
            return Attempt(None, f"refused target: the URL {problem}")
        if endpoint.secret is None:  # listed with secrets above; a bug if not
            return Attempt(None, "the endpoint's secret is not available")
        body = envelope_body(delivery.event_type, delivery.event_created_at, delivery.payload)
        headers = signed_headers(endpoint.secret, delivery.event_id, int(self.clock.time()), body)
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = f"tokenkeep/{__version__}"
        return await self._post(endpoint.url, body, headers)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        """POST with the timeout measured on our clock (tests move it; a hanging receiver
        is cut off when it passes)."""
        send = asyncio.ensure_future(self._send(url, body, headers))
        timer = asyncio.ensure_future(self.clock.sleep(self.timeout))
        try:
            await asyncio.wait({send, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if not send.done():
            send.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await send
            return Attempt(None, f"timed out after {self.timeout:g} s")
        try:
            return send.result()
        except TimeoutError:
            return Attempt(None, f"timed out after {self.timeout:g} s")
        except Exception as exc:  # any failure to get an answer is a failed attempt
            return Attempt(None, f"{type(exc).__name__}: {str(exc)[:200]}")

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        http = self._session()
        async with http.post(url, data=body, headers=headers, allow_redirects=False) as answer:
            await answer.content.read(4096)  # a little of the body, then let it go
            return Attempt(answer.status, None if answer.status < 300 else f"HTTP {answer.status}")

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(allow_private=self.settings.allow_insecure_loopback),
                limit=self.concurrency * 2,
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                # The real-time net under the clock's timeout (the same length).
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                auto_decompress=False,
            )
        return self._http

    async def _close_http(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()
