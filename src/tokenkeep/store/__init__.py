"""The store: SQLAlchemy 2 async models, repositories and migrations (SQLite, PostgreSQL).

Start with :func:`open_store`; see ``docs/ARCHITECTURE.md`` ("Store") for the contract.
"""

from tokenkeep.store.api_keys import ApiKeyRepository, hash_api_key
from tokenkeep.store.connections import ConnectionInput, ConnectionRepository
from tokenkeep.store.database import Database, migrations_path
from tokenkeep.store.deliveries import DeliveryRepository
from tokenkeep.store.facade import Store, ensure_bootstrap_api_key, open_store
from tokenkeep.store.integrations import IntegrationRepository
from tokenkeep.store.keys import RotationResult, rotate_keys, verify_keyring
from tokenkeep.store.operations import OperationLog, Outbox
from tokenkeep.store.outbox_events import OutboxEvent, OutboxEventRepository
from tokenkeep.store.records import (
    AUTH_MODES,
    CONNECTION_STATUSES,
    ApiKey,
    Connection,
    ConnectionCredentials,
    ConnectionPage,
    CreatedApiKey,
    Integration,
    IntegrationSecrets,
    Operation,
)
from tokenkeep.store.sentinel import KEEP, Keep
from tokenkeep.store.webhooks import WebhookEndpoint, WebhookEndpointRepository

__all__ = [
    "AUTH_MODES",
    "CONNECTION_STATUSES",
    "KEEP",
    "ApiKey",
    "ApiKeyRepository",
    "Connection",
    "ConnectionCredentials",
    "ConnectionInput",
    "ConnectionPage",
    "ConnectionRepository",
    "CreatedApiKey",
    "Database",
    "DeliveryRepository",
    "Integration",
    "IntegrationRepository",
    "IntegrationSecrets",
    "Keep",
    "Operation",
    "OperationLog",
    "Outbox",
    "OutboxEvent",
    "OutboxEventRepository",
    "RotationResult",
    "Store",
    "WebhookEndpoint",
    "WebhookEndpointRepository",
    "ensure_bootstrap_api_key",
    "hash_api_key",
    "migrations_path",
    "open_store",
    "rotate_keys",
    "verify_keyring",
]
