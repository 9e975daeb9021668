"""What the proxy needs from the token lifecycle: the :class:`TokenSource` protocol.

The diagnosis service (:class:`tokenkeep.diagnosis.service.Diagnoser`, over the refresh
coordinator) implements it; tests implement it with a small class over the emulator. The
proxy never reads the database itself.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tokenkeep.diagnosis.service import ProxiedFailure, Verdict
from tokenkeep.lifecycle.tokens import FreshToken

__all__ = ["FreshToken", "ProxiedFailure", "TokenSource", "Verdict"]


@runtime_checkable
class TokenSource(Protocol):
    """Hands out tokens to the proxy, refreshes them when Salesforce rejects one, and names
    the cause of an auth failure."""

    async def token_for(self, connection_id: str) -> FreshToken:
        """The current token (from an in-process cache when possible).

        Raises ``NotFoundError`` (404), ``NeedsReauthError`` (409), ``ActionRequiredError``
        (424) or ``TransientUpstreamError`` (503: a refused token during a refresh backoff).
        """
        ...

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        """A token newer than ``rejected_version``: single-flight refresh, or the one that
        another caller already obtained (no refresh then). Raises like :meth:`token_for`."""
        ...

    async def settle(self, failure: ProxiedFailure) -> Verdict:
        """After the retry-once: the cause word of the call (the source records and acts
        on its diagnosis: status, events, learned timeouts)."""
        ...
