"""The tokenkeep Python SDK.

* :class:`Client` / :class:`AsyncClient`: the control API (integrations, connections,
  tokens, refresh, connect sessions, diagnosis, logs) with typed errors.
* :class:`TokenkeepAuth` (httpx) and :class:`TokenkeepRequestsAuth` (requests): direct mode
  for your own HTTP code: the gateway's token, renewed and replayed once on a dead session.
* :func:`simple_salesforce`: a real ``simple_salesforce.Salesforce`` bound to a connection,
  through the gateway's proxy or in direct mode.
* :func:`verify_webhook`: check a webhook's Standard Webhooks signature and age on the
  receiving side (:class:`WebhookVerificationError` when it is not genuine or too old).

Errors: codes the gateway shares with :mod:`tokenkeep.errors` raise those classes
(``NotFoundError``, ``ConflictError``, ``UnauthorizedError``, ``NeedsReauthError``,
``ActionRequiredError``, ``ValidationError``...); any other is :class:`TokenkeepAPIError`
(with ``code`` and ``status_code``); no answer is :class:`GatewayUnreachableError`.
"""

from tokenkeep.client._async_client import AsyncClient
from tokenkeep.client._auth import TokenkeepAuth, TokenkeepRequestsAuth
from tokenkeep.client._base import DEFAULT_TIMEOUT
from tokenkeep.client._client import Client
from tokenkeep.client._errors import GatewayUnreachableError, TokenkeepAPIError
from tokenkeep.client._models import (
    Connection,
    ConnectionPage,
    ConnectSession,
    Diagnosis,
    Integration,
    LogEntry,
    Token,
)
from tokenkeep.client._simple_salesforce import simple_salesforce
from tokenkeep.client._webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "Client",
    "ConnectSession",
    "Connection",
    "ConnectionPage",
    "Diagnosis",
    "GatewayUnreachableError",
    "Integration",
    "LogEntry",
    "Token",
    "TokenkeepAPIError",
    "TokenkeepAuth",
    "TokenkeepRequestsAuth",
    "WebhookVerificationError",
    "simple_salesforce",
    "verify_webhook",
]
