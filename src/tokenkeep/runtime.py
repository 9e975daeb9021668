"""The running gateway: settings, clock, logger and store, built once at start-up.

:class:`Gateway` is what every part of the server shares (the control API, the proxy, the
lifecycle services). Nothing touches the disk or the database until :meth:`Gateway.start`,
so building one is cheap and side-effect free.

Start-up, in order: create the data directory, load (or on first start generate) the
encryption keys, open the database, run the migrations, prove the keyring can read the data
already stored, and make sure an API key exists (a new one is returned once, for printing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from tokenkeep.clock import Clock, DatabaseClock
from tokenkeep.config import Settings
from tokenkeep.crypto import Keyring
from tokenkeep.errors import TokenkeepError
from tokenkeep.observability.logging import get_logger
from tokenkeep.observability.metrics import Metrics
from tokenkeep.observability.oplog import OperationQueue
from tokenkeep.orgs.health import OrgHealth
from tokenkeep.orgs.shared_pause import SharedWritePause
from tokenkeep.secret import Secret
from tokenkeep.store import Store, ensure_bootstrap_api_key, open_store
from tokenkeep.store.clock_sync import ClockSync
from tokenkeep.store.database import Database
from tokenkeep.store.retention import LogRetention

if TYPE_CHECKING:
    import aiohttp

    from tokenkeep.diagnosis.service import Diagnoser
    from tokenkeep.events.worker import WebhookWorker
    from tokenkeep.lifecycle.coordinator import RefreshCoordinator
    from tokenkeep.lifecycle.scheduler import RefreshScheduler
    from tokenkeep.oauth.client import TokenEndpointClient

__all__ = ["Gateway", "GatewayNotStartedError", "Service"]


class GatewayNotStartedError(TokenkeepError):
    """The gateway was used before :meth:`Gateway.start` (or after :meth:`Gateway.stop`)."""

    code = "not_ready"
    status_code = 503


class Service(Protocol):
    """A background service the gateway starts after its store and stops before it."""

    async def start(self) -> None:
        """Begin work (spawn tasks); return promptly."""

    async def stop(self) -> None:
        """Stop work and wait for it to end."""


class Gateway:
    """Everything a running tokenkeep process shares."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        # Production runs on the database's time (corrected at start): leases and expiries
        # are compared across gateways. A clock given (tests, the demo) is used as it is.
        self.clock: Clock = clock or DatabaseClock()
        self.log = get_logger("tokenkeep")
        self._store: Store | None = None
        self._services: list[Service] = []
        self._running: list[Service] = []
        self._http: aiohttp.ClientSession | None = None
        self._oauth: TokenEndpointClient | None = None
        self._coordinator: RefreshCoordinator | None = None
        self._diagnoser: Diagnoser | None = None
        self._log_store: Store | None = None
        # Org health's view for the diagnosis (write pause, error bursts), when wired.
        # The proactive refresh scheduler (None unless TOKENKEEP_SCHEDULER_ENABLED).
        self.scheduler: RefreshScheduler | None = None
        # The webhook delivery worker (None unless TOKENKEEP_WEBHOOKS_ENABLED).
        self.webhooks: WebhookWorker | None = None
        self._lifecycle_services: list[Service] = []
        # Org health (tokenkeep.orgs), shared with every other gateway through the store:
        # built now, attached to the store at start. The proxy counts calls into
        # org_health and asks write_pause before each write; diagnosis reads both.
        self.org_health = OrgHealth(settings, self.clock)
        self.write_pause = SharedWritePause(settings, self.clock)
        # Observability: this process's metrics (GET /metrics) and the operation log's
        # write queue (flushed to store.operations in batches; see observability/oplog.py).
        self.metrics = Metrics(org_label=settings.metrics_org_label)
        self.org_health.metrics = self.metrics
        self.write_pause.metrics = self.metrics
        self.oplog = OperationQueue(
            self._write_log,
            clock=self.clock,
            capacity=settings.log_queue_size,
            interval_seconds=settings.log_flush_seconds,
            on_drop=self.metrics.log_dropped.inc,
            enabled=settings.operation_log,
        )

    def __repr__(self) -> str:
        state = "started" if self._store is not None else "stopped"
        return f"Gateway({self.settings.db_url.split('://', 1)[0]}, {state})"

    # -- what the rest of the code uses -----------------------------------------------------
    @property
    def started(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._store is not None

    @property
    def store(self) -> Store:
        """The open store (repositories, database, keyring)."""
        if self._store is None:
            raise GatewayNotStartedError("the gateway is not started")
        return self._store

    @property
    def db(self) -> Database:
        """The database edge of the open store."""
        return self.store.db

    @property
    def keyring(self) -> Keyring:
        """The encryption keyring of the open store."""
        return self.store.keyring

    @property
    def oauth(self) -> TokenEndpointClient:
        """The token-endpoint client (one shared aiohttp session for every provider call)."""
        if self._oauth is None:
            raise GatewayNotStartedError("the gateway is not started")
        return self._oauth

    @property
    def coordinator(self) -> RefreshCoordinator:
        """The single-flight refresh coordinator (also the proxy's token source)."""
        if self._coordinator is None:
            raise GatewayNotStartedError("the gateway is not started")
        return self._coordinator

    @property
    def diagnoser(self) -> Diagnoser:
        """The diagnosis service: the proxy's token source, ``/diagnose`` and ``/report``."""
        if self._diagnoser is None:
            raise GatewayNotStartedError("the gateway is not started")
        return self._diagnoser

    def add_service(self, service: Service) -> None:
        """Register a background service (started in order, stopped in reverse)."""
        self._services.append(service)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> Secret | None:
        """Prepare everything; return a newly generated API key (first start only).

        Raises :class:`~tokenkeep.errors.ConfigError` (bad setting),
        :class:`~tokenkeep.errors.EncryptionKeyError` (keys cannot read the stored data) or
        :class:`~tokenkeep.errors.DatabaseUnavailableError`; each message is one sentence
        fit to show a user.
        """
        if self._store is not None:
            return None
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await open_store(self.settings, clock=self.clock)
        try:
            if isinstance(self.clock, DatabaseClock):
                measured = await store.db.clock_correction(self.clock)
                self.clock.correct(self.clock.correction + measured)
            api_key = await ensure_bootstrap_api_key(store, self.settings)
            self._start_lifecycle(store)
            # The log queue first (stopped last: it drains what the others logged).
            for service in [self.oplog, *self._services, *self._lifecycle_services]:
                await service.start()
                self._running.append(service)
        except BaseException:
            await self._stop_services()
            await self._close_http()
            await store.close()
            raise
        self._store = store
        self._log_store = store
        self.log.info("gateway started", database=store.db.dialect)
        return api_key

    async def stop(self) -> None:
        """Stop the background services, then close the store. Safe to call twice."""
        await self._stop_services()
        await self._close_http()
        store, self._store = self._store, None
        self._log_store = None
        self.metrics.mark_process_dead()  # multiprocess mode: drop this worker's live gauges
        if store is not None:
            await store.close()
            self.log.info("gateway stopped")

    def _start_lifecycle(self, store: Store) -> None:
        # Imported here: the lifecycle pulls in aiohttp and the OAuth layer, which the
        # admin CLI commands (that also build a Gateway) never need.
        from tokenkeep.diagnosis.probes import Probes
        from tokenkeep.diagnosis.service import Diagnoser
        from tokenkeep.lifecycle.coordinator import RefreshCoordinator
        from tokenkeep.lifecycle.durable import JournalReplay
        from tokenkeep.oauth.client import TokenEndpointClient
        from tokenkeep.oauth.session import create_session

        settings = self.settings
        self._http = create_session(
            egress_address=settings.egress_address,
            ca_bundle=settings.ca_bundle,
            timeout_seconds=settings.upstream_timeout_seconds,
            connect_timeout_seconds=settings.upstream_connect_timeout_seconds,
        )
        self._oauth = TokenEndpointClient(self._http, clock=self.clock)
        self._log_store = store  # the log queue's sink, from the first service on
        self._coordinator = RefreshCoordinator(
            store, self._oauth, settings=settings, clock=self.clock, metrics=self.metrics
        )
        self._diagnoser = Diagnoser(
            store,
            self._coordinator,
            Probes(self._oauth, settings, self.clock),
            settings=settings,
            clock=self.clock,
            org_signals=_OrgSignals(self.org_health, self.write_pause),
        )
        self.org_health.attach(store)
        self.write_pause.attach(store)
        self._lifecycle_services = [
            # First: token answers a previous run got and never committed (journal.py).
            JournalReplay(self._coordinator.refresher.durable),
            # Revoked API keys: seen by this process within the recheck interval.
            store.api_keys.recheck_service(settings.api_key_recheck_seconds),
            self.write_pause,
            self.org_health,
            LogRetention(store.operations, settings, self.clock),
        ]
        if isinstance(self.clock, DatabaseClock) and not store.db.is_sqlite:
            # A host clock stepped after start is corrected again (store/clock_sync.py).
            self._lifecycle_services.append(
                ClockSync(store.db, self.clock, settings.clock_sync_seconds)
            )
        if settings.scheduler_enabled:
            from tokenkeep.lifecycle.scheduler import RefreshScheduler

            self.scheduler = RefreshScheduler(
                store, self._coordinator, settings=settings, clock=self.clock
            )
            self._lifecycle_services.append(self.scheduler)
        if settings.webhooks_enabled:
            from tokenkeep.events.worker import WebhookWorker

            self.webhooks = WebhookWorker(
                store, settings=settings, clock=self.clock, metrics=self.metrics
            )
            self._lifecycle_services.append(self.webhooks)

    async def _close_http(self) -> None:
        http, self._http = self._http, None
        self._oauth = None
        if self._coordinator is not None:
            await self._coordinator.aclose()
        self._coordinator = None
        self._diagnoser = None
        self.scheduler = None
        self.webhooks = None
        self._lifecycle_services = []
        self.org_health.attach(None)
        self.write_pause.attach(None)
        if http is not None:
            await http.close()

    async def _write_log(self, entries: list[dict[str, Any]]) -> None:
        store = self._log_store
        if store is None:
            raise GatewayNotStartedError("the gateway is not started")
        await store.operations.insert_many(entries)

    async def _stop_services(self) -> None:
        while self._running:
            service = self._running.pop()
            try:
                await service.stop()
            except Exception:
                self.log.exception("service failed to stop", service=type(service).__name__)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _OrgSignals:
    """What the diagnosis reads of org health: the shared write pause and the session
    errors of every gateway (:class:`tokenkeep.diagnosis.service.OrgSignals`)."""

    def __init__(self, health: OrgHealth, pause: SharedWritePause) -> None:
        self._health = health
        self._pause = pause

    def is_paused(self, org_key: str) -> bool:
        return self._pause.is_paused(org_key)

    def failing_connections(
        self, org_id: str, *, seconds: float = 60.0, exclude: str | None = None
    ) -> int:
        return self._health.failing_connections(org_id, seconds=seconds, exclude=exclude)
