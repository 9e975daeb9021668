"""Build the proxy for a running gateway (the seam ``tokenkeep.server`` looks for).

``create_proxy_app(gateway)`` wires :class:`~tokenkeep.proxy.app.ProxyApp` to the gateway:

* API keys: ``gateway.store.api_keys`` (:class:`~tokenkeep.proxy.auth.StoreKeyCheck`): the
  store's in-process cache, shared with the control API and re-checked every
  ``TOKENKEEP_API_KEY_RECHECK_SECONDS``, so a revoked key is refused here within a second;
* tokens and causes: ``gateway.diagnoser`` over the gateway's ``RefreshCoordinator`` (any
  :class:`~tokenkeep.proxy.source.TokenSource` can be passed instead). It is looked up on
  each call (one attribute read), because it needs the store, which exists
  only while the gateway runs: before ``gateway.start()`` and after ``stop()`` proxied
  calls answer ``503 not_ready`` (with ``Retry-After``);
* org health: the gateway's shared write pause (``org.maintenance_started`` /
  ``org.maintenance_ended`` go to the webhook outbox in the transaction of the change) and
  its call counters (``tokenkeep.orgs``);
* observability: each answered call is an entry in the gateway's operation-log queue and
  counts in its metrics (:mod:`tokenkeep.proxy.observe`);
* lifecycle: the app is registered as a gateway service, so its upstream session is created
  on start and closed on stop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenkeep.proxy.app import ProxyApp
from tokenkeep.proxy.auth import StoreKeyCheck
from tokenkeep.proxy.source import FreshToken, ProxiedFailure, TokenSource, Verdict
from tokenkeep.proxy.upstream import UPSTREAM_POOL_LIMIT, UPSTREAM_POOL_LIMIT_PER_HOST
from tokenkeep.runtime import GatewayNotStartedError

if TYPE_CHECKING:
    from tokenkeep.runtime import Gateway

__all__ = ["create_proxy_app"]


class _GatewayTokens:
    """Forwards to ``gateway.diagnoser`` (over its coordinator) once the gateway runs."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def _source(self) -> TokenSource:
        try:
            return self._gateway.diagnoser
        except GatewayNotStartedError:
            raise GatewayNotStartedError(
                "The gateway's token service is not running yet."
            ) from None

    async def token_for(self, connection_id: str) -> FreshToken:
        return await self._source().token_for(connection_id)

    def cached_token(self, connection_id: str) -> FreshToken | None:
        """The coordinator's synchronous cache hit (no coroutine on the hot path)."""
        try:
            return self._gateway.coordinator.cached_token(connection_id)
        except GatewayNotStartedError:
            return None

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        return await self._source().refresh_after_rejection(connection_id, rejected_version)

    async def settle(self, failure: ProxiedFailure) -> Verdict:
        return await self._source().settle(failure)


def create_proxy_app(gateway: Gateway, tokens: TokenSource | None = None) -> ProxyApp:
    """The proxy ASGI app for ``gateway`` (``tokens`` overrides ``gateway.diagnoser``)."""

    async def on_event(event_type: str, org_id: str, payload: dict[str, Any]) -> None:
        store = gateway.store
        async with store.db.write() as session:
            store.outbox.add_event(session, event_type, payload=payload, org_id=org_id)

    app = ProxyApp(
        tokens or _GatewayTokens(gateway),
        StoreKeyCheck(gateway),
        gateway.settings,
        gateway.clock,
        on_event=on_event,
        # Org health: one write pause and one set of counts for every gateway (orgs/).
        write_pause=gateway.write_pause,
        org_health=gateway.org_health,
        # Every call: one operation-log entry (queued, flushed in batches) and the metrics.
        oplog=gateway.oplog,
        metrics=gateway.metrics,
        # One org's storm must not take every upstream connection (upstream.py).
        pool_limit=UPSTREAM_POOL_LIMIT,
        pool_limit_per_host=UPSTREAM_POOL_LIMIT_PER_HOST,
    )
    gateway.add_service(app)
    return app
