"""What the proxy needs from the token lifecycle: the :class:`TokenSource` protocol.

The refresh coordinator (``tokenkeep.lifecycle``) implements it; tests implement it with a
small class over the emulator. The proxy never reads the database itself.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from tokenkeep.lifecycle.tokens import FreshToken

__all__ = ["FreshToken", "TokenSource"]


@runtime_checkable
class TokenSource(Protocol):
    """Hands out tokens to the proxy and refreshes them when Salesforce rejects one."""

    async def token_for(self, connection_id: str) -> FreshToken:
        """The current token (from an in-process cache when possible).

        Raises ``NotFoundError`` (404), ``NeedsReauthError`` (409) or
        ``ActionRequiredError`` (424; ``details["cause"]`` may name the cause word).
        """
        ...

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        """A token newer than ``rejected_version``: single-flight refresh, or the one that
        another caller already obtained (no refresh then). Raises like :meth:`token_for`."""
        ...

    async def confirm_recovered(self, connection_id: str, rejected_version: int) -> None:
        """The call replayed after :meth:`refresh_after_rejection` did not fail with an auth
        error: the rejected token had expired (the lifecycle learns session timeouts from
        this, never from a bare rejection)."""
        ...

    async def report_cause(self, connection_id: str, cause: str, evidence: dict[str, Any]) -> None:
        """Tell the lifecycle/diagnosis layer why a proxied call failed for good."""
        ...
