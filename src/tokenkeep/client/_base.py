"""What ``Client`` and ``AsyncClient`` share: base URL, API key, HTTP options, helpers.

Both send the :class:`~tokenkeep.client._operations.Operation` values built in
``_operations.py`` and parse the answers there; their methods only say which one.
"""

from __future__ import annotations

from typing import Any

import httpx

from tokenkeep.__about__ import __version__
from tokenkeep.client._errors import GatewayUnreachableError
from tokenkeep.secret import Secret

__all__ = ["DEFAULT_TIMEOUT"]

#: Seconds for each control-API call. A forced refresh waits on Salesforce's token
#: endpoint (and possibly another process's lease), so this is not tiny.
DEFAULT_TIMEOUT = 30.0


class _Base:
    """What both clients share: the base URL, the API key and the HTTP settings."""

    def __init__(self, base_url: str, api_key: str | Secret) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = Secret(api_key) if not isinstance(api_key, Secret) else api_key

    @property
    def base_url(self) -> str:
        """The gateway's base URL (no trailing slash)."""
        return self._base_url

    @property
    def api_key(self) -> Secret:
        """The API key this client sends (proxy mode uses it as the Salesforce token)."""
        return self._api_key

    def proxy_url(self, connection_id: str) -> str:
        """The drop-in instance URL of a connection: ``<gateway>/c/<connection_id>``.

        Give it to an unmodified Salesforce client as its instance URL, with
        :attr:`api_key` as its access token (jsforce, curl, ...).
        """
        return f"{self._base_url}/c/{connection_id}"

    def _http_options(self, timeout: float | httpx.Timeout) -> dict[str, Any]:
        return {
            "base_url": self._base_url,
            "timeout": timeout,
            "headers": {
                "Authorization": f"Bearer {self._api_key.reveal()}",
                "User-Agent": f"tokenkeep-python/{__version__}",
            },
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._base_url!r})"


def _unreachable(exc: httpx.TransportError, base_url: str) -> GatewayUnreachableError:
    return GatewayUnreachableError(
        f"the tokenkeep gateway at {base_url} did not answer: {type(exc).__name__}: {exc}"
    )


def _seen_cursor(cursor: str | None, seen: set[str]) -> bool:
    # A gateway that hands back a cursor twice would make the iterator loop forever.
    if cursor is None or cursor in seen:
        return True
    seen.add(cursor)
    return False
