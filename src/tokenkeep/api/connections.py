"""``/connections``: import, list, show and delete customer connections."""

from __future__ import annotations

import random
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.api.deps import GatewayDep, StoreDep
from tokenkeep.api.schemas import (
    CONNECTION_ID_PATTERN,
    ConnectionImport,
    ConnectionList,
    ConnectionOut,
    parse_identity_url,
)
from tokenkeep.api.urls import check_upstream_url
from tokenkeep.clock import utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.errors import NotFoundError
from tokenkeep.lifecycle.expiry import next_refresh_at
from tokenkeep.oauth.errors import OAuthError
from tokenkeep.oauth.models import oauth_app_for
from tokenkeep.runtime import Gateway
from tokenkeep.secret import Secret
from tokenkeep.store import Store
from tokenkeep.store.connections import ConnectionInput
from tokenkeep.store.records import Connection, ConnectionStatus

__all__ = ["connection_out", "create_imported_connection", "router"]

router = APIRouter(prefix="/connections", tags=["connections"])

IdPath = Annotated[str, Path(pattern=CONNECTION_ID_PATTERN, description="connection id")]


def connection_out(connection: Connection) -> ConnectionOut:
    """The API view of a connection: never a token, only flags and a fingerprint."""
    return ConnectionOut(
        id=connection.id,
        integration=connection.integration_key,
        status=connection.status,
        status_reason=connection.status_reason,
        # An import without an identity URL stores "" (the columns are NOT NULL): show null.
        org_id=connection.org_id or None,
        user_id=connection.user_id or None,
        username=connection.username,
        instance_url=connection.instance_url,
        has_refresh_token=connection.has_refresh_token,
        refresh_token_fingerprint=connection.refresh_token_fingerprint,
        issued_at=connection.issued_at,
        expires_at=connection.expires_at,
        metadata=dict(connection.metadata),
        created_at=connection.created_at,
        updated_at=connection.updated_at,
    )


def _issued_at(value: int | str | None) -> datetime | None:
    # Salesforce's issued_at is epoch milliseconds, as a string. It is the provider's
    # clock: kept as a record, never compared with ours to decide anything.
    if value is None:
        return None
    return utc_from_timestamp(int(value) / 1000)


def _imported_expiry(
    now: float, issued_at: int | str | None, session_timeout: int, settings: Settings
) -> tuple[datetime | None, datetime | None]:
    """When an imported token dies, as far as we can know without asking Salesforce.

    With ``issued_at``, the token is assumed to live the integration's session timeout
    from then: the provider's timestamp may only *shorten* that life (a provider clock
    ahead of ours never makes a token outlive ``now + timeout``). Without it the age is
    unknown, so nothing is assumed and the first use refreshes (and learns the real expiry).
    """
    if issued_at is None:
        return None, None
    age = max(0.0, now - int(issued_at) / 1000)
    lifetime = float(session_timeout)
    expires = now + max(0.0, lifetime - age)
    refresh_at = next_refresh_at(
        expires, lifetime, settings.refresh_margin_seconds, 0.1, random.Random()
    )
    return utc_from_timestamp(expires), utc_from_timestamp(min(refresh_at, expires))


@router.post(
    "",
    response_model=ConnectionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Import a connection from tokens the app already holds",
)
async def import_connection(
    body: ConnectionImport, store: StoreDep, gateway: GatewayDep
) -> ConnectionOut:
    """201 with the connection (no token in it). 404 unknown integration, 409 duplicate id."""
    connection = await create_imported_connection(store, gateway.settings, body)
    gateway.log.info(
        "connection imported",
        connection_id=connection.id,
        integration=connection.integration_key,
        org_id=connection.org_id or None,
    )
    return connection_out(connection)


async def create_imported_connection(
    store: Store, settings: Settings, body: ConnectionImport
) -> Connection:
    """Validate and store an imported connection (shared by the API and the CLI)."""
    creds = body.credentials
    check_upstream_url(creds.instance_url, "credentials.instance_url", settings)
    org_id, user_id = parse_identity_url(creds.id)
    refresh = creds.refresh_token.get_secret_value() if creds.refresh_token else ""
    integration = await store.integrations.get(body.integration)  # 404 before anything
    expires_at, refresh_at = _imported_expiry(
        store.clock.time(), creds.issued_at, integration.session_timeout_seconds, settings
    )

    def created_event(session: AsyncSession, connection: Connection) -> None:
        # The same event, in the same transaction, as the connect flow's new connection.
        store.outbox.add_event(
            session,
            "connection.created",
            connection_id=connection.id,
            org_id=connection.org_id or None,
            payload={
                "connection_id": connection.id,
                "org_id": connection.org_id or None,
                "integration": connection.integration_key,
                "metadata": dict(connection.metadata),
            },
        )

    return await store.connections.create(
        ConnectionInput(
            id=body.connection_id,
            integration_key=body.integration,
            org_id=org_id or "",
            user_id=user_id or "",
            instance_url=creds.instance_url,
            id_url=creds.id,
            access_token=Secret(creds.access_token.get_secret_value()),
            refresh_token=Secret(refresh) if refresh else None,
            issued_at=_issued_at(creds.issued_at),
            expires_at=expires_at,
            next_refresh_at=refresh_at,
            metadata=body.metadata,
        ),
        also=created_event,
    )


@router.get("", response_model=ConnectionList, summary="List connections")
async def list_connections(
    store: StoreDep,
    *,
    integration: Annotated[str | None, Query(max_length=100)] = None,
    status_: Annotated[ConnectionStatus | None, Query(alias="status")] = None,
    org_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> ConnectionList:
    """Oldest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    page = await store.connections.list(
        integration=integration, status=status_, org_id=org_id, limit=limit, cursor=cursor
    )
    return ConnectionList(
        data=[connection_out(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get("/{connection_id}", response_model=ConnectionOut, summary="Show a connection")
async def get_connection(connection_id: IdPath, store: StoreDep) -> ConnectionOut:
    """404 ``not_found`` if there is no such connection."""
    return connection_out(await store.connections.get(connection_id))


@router.delete(
    "/{connection_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a connection"
)
async def delete_connection(
    connection_id: IdPath,
    store: StoreDep,
    gateway: GatewayDep,
    revoke: Annotated[bool, Query(description="also revoke the tokens upstream")] = False,
) -> Response:
    """204; 404 if unknown. The tokens are gone from the store when this returns."""
    if revoke:
        await _revoke_upstream(gateway, store, connection_id)
    await store.connections.delete(connection_id)
    gateway.coordinator.forget(connection_id)
    gateway.log.info("connection deleted", connection_id=connection_id, revoked=revoke)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _revoke_upstream(gateway: Gateway, store: Store, connection_id: str) -> None:
    """Revoke the grant at the provider before the row goes.

    Revoking the refresh token revokes its access tokens too. ``invalid_token`` means the
    provider no longer knows the token (already revoked): the goal is met. Any other refusal
    or a transport fault keeps the connection (502/503): deleting it would leave a live
    grant the user believes is gone, with no token left to revoke it.
    """
    conn = await store.connections.get(connection_id, with_credentials=True)
    integration = await store.integrations.get(conn.integration_key, with_secrets=True)
    credentials = conn.credentials
    if credentials is None:  # asked for above; the repository always fills it then
        raise NotFoundError(f"connection {connection_id} has no stored credentials")
    token = credentials.refresh_token or credentials.access_token
    try:
        await gateway.oauth.revoke(oauth_app_for(integration), token)
    except OAuthError as exc:
        if exc.error != "invalid_token":
            raise
