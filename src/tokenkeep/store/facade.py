"""``open_store``: the one call that takes the store from settings to ready."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.crypto import Keyring, load_or_create_keyring
from tokenkeep.secret import Secret
from tokenkeep.store.api_keys import ApiKeyRepository
from tokenkeep.store.connect_sessions import ConnectSessionRepository
from tokenkeep.store.connections import ConnectionRepository
from tokenkeep.store.dashboard_queries import DashboardQueries
from tokenkeep.store.dashboard_sessions import DashboardSessionRepository
from tokenkeep.store.database import Database
from tokenkeep.store.deliveries import DeliveryRepository
from tokenkeep.store.diagnoses import DiagnosisRepository
from tokenkeep.store.integrations import IntegrationRepository
from tokenkeep.store.keys import verify_keyring
from tokenkeep.store.leases import LeaseRepository
from tokenkeep.store.operations import OperationLog, Outbox
from tokenkeep.store.org_counts import OrgCallCountRepository
from tokenkeep.store.org_state import OrgStateRepository
from tokenkeep.store.outbox_events import OutboxEventRepository
from tokenkeep.store.refresh_state import RefreshStateRepository
from tokenkeep.store.schedule import ScheduleRepository
from tokenkeep.store.webhooks import WebhookEndpointRepository

__all__ = ["Store", "ensure_bootstrap_api_key", "open_store"]


@dataclass
class Store:
    """The database, the keyring and the repositories over them."""

    db: Database
    keyring: Keyring
    clock: Clock
    integrations: IntegrationRepository = field(init=False)
    connections: ConnectionRepository = field(init=False)
    operations: OperationLog = field(init=False)
    outbox: Outbox = field(init=False)
    api_keys: ApiKeyRepository = field(init=False)
    refresh_state: RefreshStateRepository = field(init=False)
    leases: LeaseRepository = field(init=False)
    schedule: ScheduleRepository = field(init=False)
    orgs: OrgStateRepository = field(init=False)
    org_counts: OrgCallCountRepository = field(init=False)
    connect_sessions: ConnectSessionRepository = field(init=False)
    diagnoses: DiagnosisRepository = field(init=False)
    webhooks: WebhookEndpointRepository = field(init=False)
    deliveries: DeliveryRepository = field(init=False)
    events: OutboxEventRepository = field(init=False)
    dashboard_sessions: DashboardSessionRepository = field(init=False)
    dashboard: DashboardQueries = field(init=False)

    def __post_init__(self) -> None:
        self.integrations = IntegrationRepository(self.db, self.keyring, self.clock)
        self.connections = ConnectionRepository(self.db, self.keyring, self.clock)
        self.operations = OperationLog(self.db, self.clock)
        self.outbox = Outbox(self.db, self.clock)
        self.api_keys = ApiKeyRepository(self.db, self.clock)
        self.refresh_state = RefreshStateRepository(self.db, self.keyring, self.clock)
        self.leases = LeaseRepository(self.db)
        self.schedule = ScheduleRepository(self.db)
        self.orgs = OrgStateRepository(self.db, self.clock, self.operations)
        self.org_counts = OrgCallCountRepository(self.db)
        self.connect_sessions = ConnectSessionRepository(self.db, self.keyring, self.clock)
        self.diagnoses = DiagnosisRepository(self.db, self.clock, self.operations, self.outbox)
        self.webhooks = WebhookEndpointRepository(self.db, self.keyring, self.clock)
        self.deliveries = DeliveryRepository(self.db, self.operations)
        self.events = OutboxEventRepository(self.db)
        self.dashboard_sessions = DashboardSessionRepository(self.db, self.clock)
        self.dashboard = DashboardQueries(self.db, self.connections)

    async def close(self) -> None:
        """Close the database pool."""
        await self.db.close()


async def open_store(
    settings: Settings,
    *,
    clock: Clock,
    keyring: Keyring | None = None,
    upgrade: bool = True,
) -> Store:
    """Keyring → database → migrations (unless ``upgrade=False``) → keyring check.

    Raises :class:`~tokenkeep.errors.EncryptionKeyError` when the keys cannot read the
    stored data, :class:`~tokenkeep.errors.DatabaseUnavailableError` when the database is
    unreachable. The database is closed again if any step fails.
    """
    keyring = keyring or load_or_create_keyring(settings)
    db = Database(
        settings.db_url,
        clock=clock,
        pool_size=settings.db_pool_size,
        connect_timeout=settings.db_connect_timeout,
        # One blocking connection per lease held at once (the scheduler's token calls,
        # plus a couple for callers' refreshes).
        blocking_pool_size=settings.scheduler_concurrency + 2,
    )
    try:
        if upgrade:
            await db.upgrade()
        if await db.schema_is_current():
            await verify_keyring(db, keyring)
    except BaseException:
        await db.close()
        raise
    return Store(db=db, keyring=keyring, clock=clock)


async def ensure_bootstrap_api_key(store: Store, settings: Settings) -> Secret | None:
    """Make sure some API key works; return a new plaintext to print once, else ``None``.

    With ``TOKENKEEP_SECRET_KEY`` set, that value is accepted (stored as a hash under the
    id ``env``; changing the variable replaces it) and nothing is generated. Without it,
    the first start generates a ``tk_...`` key, stores its hash, writes the plaintext to
    ``<data dir>/secret-key`` (0600; ``tokenkeep demo`` reads it) and returns it.
    """
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        await store.api_keys.accept_env_key(settings.secret_key.get_secret_value())
        return None
    return await store.api_keys.create_bootstrap_key(settings.data_dir)
