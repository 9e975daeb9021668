"""Webhooks from the durable outbox: envelope, Standard Webhooks signer, target check and
the delivery worker (see ``docs/ARCHITECTURE.md``, "Webhooks")."""

from tokenkeep.events.envelope import envelope, envelope_body, event_data
from tokenkeep.events.signer import new_webhook_secret, signed_headers
from tokenkeep.events.targets import webhook_target_problem
from tokenkeep.events.worker import WebhookWorker

__all__ = [
    "WebhookWorker",
    "envelope",
    "envelope_body",
    "event_data",
    "new_webhook_secret",
    "signed_headers",
    "webhook_target_problem",
]
