"""What the proxy needs from the token lifecycle: the :class:`TokenSource` protocol.

The refresh coordinator (``tokenkeep.lifecycle``) implements it; tests implement it with a
small class over the emulator. The proxy never reads the database itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tokenkeep.secret import Secret

__all__ = ["ProxyToken", "TokenSource"]


@dataclass(frozen=True, slots=True)
class ProxyToken:
    """A usable access token for one connection, tagged with the row version it came from.

    ``version`` is the fencing tag: the proxy hands it back to
    :meth:`TokenSource.refresh_after_rejection` so a token that another caller (or process)
    has already replaced is not refreshed twice.
    """

    connection_id: str
    org_id: str | None
    instance_url: str
    access_token: Secret
    version: int


@runtime_checkable
class TokenSource(Protocol):
    """Hands out tokens to the proxy and refreshes them when Salesforce rejects one."""

    async def token_for(self, connection_id: str) -> ProxyToken:
        """The current token (from an in-process cache when possible).

        Raises ``NotFoundError`` (404), ``NeedsReauthError`` (409) or
        ``ActionRequiredError`` (424; ``details["cause"]`` may name the cause word).
        """
        ...

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> ProxyToken:
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
