"""``AsyncClient``: the asynchronous twin of :class:`~tokenkeep.client.Client`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from tokenkeep.client import _operations as ops
from tokenkeep.client._base import DEFAULT_TIMEOUT, _Base, _seen_cursor, _unreachable
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

T = TypeVar("T")

__all__ = ["AsyncClient"]


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

    async def report(
        self,
        connection_id: str,
        *,
        status: int,
        body: str | bytes,
        host: str,
        address: str | None = None,
        version: int | None = None,
    ) -> Diagnosis:
        """See :meth:`Client.report`."""
        return await self._run(
            ops.report(
                connection_id,
                status=status,
                body=body,
                host=host,
                address=address,
                version=version,
            )
        )

    async def logs(
        self,
        *,
        connection_id: str | None = None,
        org_id: str | None = None,
        kind: str | None = None,
        since: datetime | str | None = None,
        limit: int | None = None,
        cause: str | None = None,
        status: int | str | None = None,
        until: datetime | str | None = None,
    ) -> list[LogEntry]:
        """See :meth:`Client.logs`."""
        return await self._run(
            ops.logs(
                connection_id=connection_id,
                org_id=org_id,
                kind=kind,
                since=since,
                limit=limit,
                cause=cause,
                status=status,
                until=until,
            )
        )
