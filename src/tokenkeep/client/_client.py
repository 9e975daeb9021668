"""``Client``: the synchronous client of the tokenkeep control API (httpx)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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

__all__ = ["Client"]


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

        ``POST /connections/{id}/diagnose``; a gateway without that route answers 404, and
        this raises :class:`TokenkeepAPIError`/``NotFoundError``.
        """
        return self._run(ops.diagnose(connection_id))

    def report(
        self,
        connection_id: str,
        *,
        status: int,
        body: str | bytes,
        host: str,
        address: str | None = None,
        version: int | None = None,
    ) -> Diagnosis:
        """Tell the gateway what Salesforce answered a direct-mode call; its diagnosis.

        ``POST /connections/{id}/report`` with the answer's ``status``, the head of its
        ``body`` (the first 2,048 characters are sent), the ``host`` the call went to
        (``scheme://host[:port]``), optionally this client's local ``address`` and the
        :attr:`Token.version` it used. The auth plug-ins call this themselves when a
        renewed token is refused again. A gateway without that route answers 404
        (``NotFoundError``).
        """
        return self._run(
            ops.report(
                connection_id,
                status=status,
                body=body,
                host=host,
                address=address,
                version=version,
            )
        )

    def logs(
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
        """The operation log (refreshes, proxied calls, webhooks), newest first."""
        return self._run(
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
