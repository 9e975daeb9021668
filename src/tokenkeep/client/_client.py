"""``Client`` (sync) and ``AsyncClient``: the control API of a tokenkeep gateway.

Both send the :class:`~tokenkeep.client._operations.Operation` values built in
``_operations.py`` and parse the answers there; the methods below only say which one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from tokenkeep.__about__ import __version__
from tokenkeep.client import _operations as ops
from tokenkeep.client._errors import GatewayUnreachableError
from tokenkeep.client._models import (
    Connection,
    ConnectionPage,
    ConnectSession,
    Diagnosis,
    Integration,
    LogEntry,
    Token,
)
from tokenkeep.secret import Secret

__all__ = ["DEFAULT_TIMEOUT", "AsyncClient", "Client"]

T = TypeVar("T")

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


class Client(_Base):
    """A synchronous client of the tokenkeep control API (httpx).

    ``transport`` is an optional ``httpx.BaseTransport`` (e.g. ``httpx.MockTransport`` in
    tests). Errors are typed: ``NotFoundError``, ``ConflictError``, ``UnauthorizedError``,
    ``NeedsReauthError``, ``ActionRequiredError``... from :mod:`tokenkeep.errors`, else
    :class:`TokenkeepAPIError`; no answer at all is :class:`GatewayUnreachableError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | Secret,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self._http = httpx.Client(transport=transport, **self._http_options(timeout))

    def _run(self, op: ops.Operation[T]) -> T:
        try:
            response = self._http.request(op.method, op.path, params=op.params, json=op.json)
        except httpx.TransportError as exc:
            raise _unreachable(exc, self._base_url) from exc
        return op.result(response)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- integrations -----------------------------------------------------------------------
    def put_integration(
        self,
        key: str,
        *,
        client_id: str,
        client_secret: str | Secret | None = None,
        login_url: str | None = None,
        scopes: list[str] | None = None,
        auth_mode: str | None = None,
        private_key: str | Secret | None = None,
        username: str | None = None,
        session_timeout_seconds: int | None = None,
        provider: str | None = None,
    ) -> tuple[Integration, bool]:
        """Create or replace an integration → ``(integration, created)``.

        A secret left as ``None`` keeps the stored one. Other ``None`` fields take the
        gateway's defaults.
        """
        return self._run(
            ops.put_integration(
                key,
                client_id=client_id,
                client_secret=client_secret,
                login_url=login_url,
                scopes=scopes,
                auth_mode=auth_mode,
                private_key=private_key,
                username=username,
                session_timeout_seconds=session_timeout_seconds,
                provider=provider,
            )
        )

    def get_integration(self, key: str) -> Integration:
        """One integration (``NotFoundError`` if unknown)."""
        return self._run(ops.get_integration(key))

    def list_integrations(self) -> list[Integration]:
        """Every integration."""
        return self._run(ops.list_integrations())

    def delete_integration(self, key: str) -> None:
        """Delete an integration (``ConflictError`` while connections use it)."""
        return self._run(ops.delete_integration(key))

    # -- connections ------------------------------------------------------------------------
    def import_connection(
        self,
        integration: str,
        *,
        access_token: str | Secret,
        instance_url: str,
        refresh_token: str | Secret | None = None,
        connection_id: str | None = None,
        id_url: str | None = None,
        issued_at: int | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Connection:
        """Import tokens the app already holds (``id_url`` is Salesforce's ``id`` field)."""
        return self._run(
            ops.import_connection(
                integration,
                access_token=access_token,
                instance_url=instance_url,
                refresh_token=refresh_token,
                connection_id=connection_id,
                id_url=id_url,
                issued_at=issued_at,
                metadata=metadata,
            )
        )

    def list_connections(
        self,
        *,
        integration: str | None = None,
        status: str | None = None,
        org_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ConnectionPage:
        """One page of connections, oldest first (see :meth:`iter_connections`)."""
        return self._run(
            ops.list_connections(
                integration=integration, status=status, org_id=org_id, limit=limit, cursor=cursor
            )
        )

    def iter_connections(
        self,
        *,
        integration: str | None = None,
        status: str | None = None,
        org_id: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Connection]:
        """Every matching connection, fetching pages as the iteration goes."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = self.list_connections(
                integration=integration,
                status=status,
                org_id=org_id,
                limit=page_size,
                cursor=cursor,
            )
            yield from page.items
            cursor = page.next_cursor
            if _seen_cursor(cursor, seen):
                return

    def get_connection(self, connection_id: str) -> Connection:
        """One connection (``NotFoundError`` if unknown)."""
        return self._run(ops.get_connection(connection_id))

    def delete_connection(self, connection_id: str, *, revoke: bool = False) -> None:
        """Delete a connection (``revoke=True`` also revokes its tokens upstream)."""
        return self._run(ops.delete_connection(connection_id, revoke=revoke))

    def refresh_connection(
        self, connection_id: str, *, rejected_version: int | None = None
    ) -> Token:
        """Refresh through the gateway's single-flight path; the new token.

        With ``rejected_version`` (a :attr:`Token.version` Salesforce just refused) the
        gateway refreshes only if that token is still the stored one, and otherwise answers
        with the newer token another caller already got.
        """
        token = self._run(ops.refresh_connection(connection_id, rejected_version=rejected_version))
        return token if token is not None else self.get_token(connection_id)

    def get_token(self, connection_id: str, *, min_ttl: float | None = None) -> Token:
        """A valid access token and its instance URL (direct mode).

        ``min_ttl``: seconds the token must stay valid (the gateway's default otherwise).
        ``NeedsReauthError`` / ``ActionRequiredError`` when the connection cannot be used.
        """
        return self._run(ops.get_token(connection_id, min_ttl=min_ttl))

    # -- connect, diagnosis, logs -----------------------------------------------------------
    def create_connect_session(
        self,
        integration: str,
        *,
        connection_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        return_url: str | None = None,
    ) -> ConnectSession:
        """A single-use hosted connect link for a user to authorize an org."""
        return self._run(
            ops.create_connect_session(
                integration, connection_id=connection_id, metadata=metadata, return_url=return_url
            )
        )

    def diagnose(self, connection_id: str) -> Diagnosis:
        """Probe a connection and name the cause of its trouble.

        The route arrives with the diagnosis step of the gateway; until then the gateway
        answers 404 and this raises :class:`TokenkeepAPIError`/``NotFoundError``.
        """
        return self._run(ops.diagnose(connection_id))

    def logs(
        self,
        *,
        connection_id: str | None = None,
        org_id: str | None = None,
        kind: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[LogEntry]:
        """The operation log (refreshes, proxied calls, webhooks), newest first."""
        return self._run(
            ops.logs(
                connection_id=connection_id, org_id=org_id, kind=kind, since=since, limit=limit
            )
        )


class AsyncClient(_Base):
    """The asynchronous twin of :class:`Client` (same methods, awaitable)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | Secret,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key)
        self._http = httpx.AsyncClient(transport=transport, **self._http_options(timeout))

    async def _run(self, op: ops.Operation[T]) -> T:
        try:
            response = await self._http.request(op.method, op.path, params=op.params, json=op.json)
        except httpx.TransportError as exc:
            raise _unreachable(exc, self._base_url) from exc
        return op.result(response)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- integrations -----------------------------------------------------------------------
    async def put_integration(
        self,
        key: str,
        *,
        client_id: str,
        client_secret: str | Secret | None = None,
        login_url: str | None = None,
        scopes: list[str] | None = None,
        auth_mode: str | None = None,
        private_key: str | Secret | None = None,
        username: str | None = None,
        session_timeout_seconds: int | None = None,
        provider: str | None = None,
    ) -> tuple[Integration, bool]:
        """See :meth:`Client.put_integration`."""
        return await self._run(
            ops.put_integration(
                key,
                client_id=client_id,
                client_secret=client_secret,
                login_url=login_url,
                scopes=scopes,
                auth_mode=auth_mode,
                private_key=private_key,
                username=username,
                session_timeout_seconds=session_timeout_seconds,
                provider=provider,
            )
        )

    async def get_integration(self, key: str) -> Integration:
        """See :meth:`Client.get_integration`."""
        return await self._run(ops.get_integration(key))

    async def list_integrations(self) -> list[Integration]:
        """See :meth:`Client.list_integrations`."""
        return await self._run(ops.list_integrations())

    async def delete_integration(self, key: str) -> None:
        """See :meth:`Client.delete_integration`."""
        return await self._run(ops.delete_integration(key))

    # -- connections ------------------------------------------------------------------------
    async def import_connection(
        self,
        integration: str,
        *,
        access_token: str | Secret,
        instance_url: str,
        refresh_token: str | Secret | None = None,
        connection_id: str | None = None,
        id_url: str | None = None,
        issued_at: int | str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Connection:
        """See :meth:`Client.import_connection`."""
        return await self._run(
            ops.import_connection(
                integration,
                access_token=access_token,
                instance_url=instance_url,
                refresh_token=refresh_token,
                connection_id=connection_id,
                id_url=id_url,
                issued_at=issued_at,
                metadata=metadata,
            )
        )

    async def list_connections(
        self,
        *,
        integration: str | None = None,
        status: str | None = None,
        org_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> ConnectionPage:
        """See :meth:`Client.list_connections`."""
        return await self._run(
            ops.list_connections(
                integration=integration, status=status, org_id=org_id, limit=limit, cursor=cursor
            )
        )

    async def iter_connections(
        self,
        *,
        integration: str | None = None,
        status: str | None = None,
        org_id: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Connection]:
        """See :meth:`Client.iter_connections` (``async for``)."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list_connections(
                integration=integration,
                status=status,
                org_id=org_id,
                limit=page_size,
                cursor=cursor,
            )
            for item in page.items:
                yield item
            cursor = page.next_cursor
            if _seen_cursor(cursor, seen):
                return

    async def get_connection(self, connection_id: str) -> Connection:
        """See :meth:`Client.get_connection`."""
        return await self._run(ops.get_connection(connection_id))

    async def delete_connection(self, connection_id: str, *, revoke: bool = False) -> None:
        """See :meth:`Client.delete_connection`."""
        return await self._run(ops.delete_connection(connection_id, revoke=revoke))

    async def refresh_connection(
        self, connection_id: str, *, rejected_version: int | None = None
    ) -> Token:
        """See :meth:`Client.refresh_connection`."""
        token = await self._run(
            ops.refresh_connection(connection_id, rejected_version=rejected_version)
        )
        return token if token is not None else await self.get_token(connection_id)

    async def get_token(self, connection_id: str, *, min_ttl: float | None = None) -> Token:
        """See :meth:`Client.get_token`."""
        return await self._run(ops.get_token(connection_id, min_ttl=min_ttl))

    # -- connect, diagnosis, logs -----------------------------------------------------------
    async def create_connect_session(
        self,
        integration: str,
        *,
        connection_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        return_url: str | None = None,
    ) -> ConnectSession:
        """See :meth:`Client.create_connect_session`."""
        return await self._run(
            ops.create_connect_session(
                integration, connection_id=connection_id, metadata=metadata, return_url=return_url
            )
        )

    async def diagnose(self, connection_id: str) -> Diagnosis:
        """See :meth:`Client.diagnose`."""
        return await self._run(ops.diagnose(connection_id))

    async def logs(
        self,
        *,
        connection_id: str | None = None,
        org_id: str | None = None,
        kind: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
    ) -> list[LogEntry]:
        """See :meth:`Client.logs`."""
        return await self._run(
            ops.logs(
                connection_id=connection_id, org_id=org_id, kind=kind, since=since, limit=limit
            )
        )
