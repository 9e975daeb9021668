"""The token lifecycle: single-flight refresh, expiry learning, the proactive scheduler and
the hosted connect flow. See the "Lifecycle" section of docs/ARCHITECTURE.md."""

from tokenkeep.lifecycle.connect import ConnectFlow, ConnectFlowError, ConnectResult
from tokenkeep.lifecycle.coordinator import RefreshCoordinator, oauth_app_for
from tokenkeep.lifecycle.scheduler import CycleReport, RefreshScheduler
from tokenkeep.lifecycle.tokens import FreshToken, TokenCache

__all__ = [
    "ConnectFlow",
    "ConnectFlowError",
    "ConnectResult",
    "CycleReport",
    "FreshToken",
    "RefreshCoordinator",
    "RefreshScheduler",
    "TokenCache",
    "oauth_app_for",
]
