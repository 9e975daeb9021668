"""The token lifecycle: single-flight refresh, expiry learning, the proactive scheduler and
the hosted connect flow. See the "Lifecycle" section of docs/ARCHITECTURE.md."""

from tokenkeep.lifecycle.connect import ConnectFlow, ConnectFlowError, ConnectResult
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.lifecycle.scheduler import CycleReport, RefreshScheduler
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.oauth.models import oauth_app_for

__all__ = [
    "ConnectFlow",
    "ConnectFlowError",
    "ConnectResult",
    "CycleReport",
    "FreshToken",
    "RefreshCoordinator",
    "RefreshScheduler",
    "oauth_app_for",
]
