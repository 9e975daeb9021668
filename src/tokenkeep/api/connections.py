"""``/connections``: import, list, show and delete customer connections."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from tokenkeep.api.deps import GatewayDep, StoreDep
from tokenkeep.api.inputs import text_query
from tokenkeep.api.responses import BODY_ERRORS, error_responses
from tokenkeep.api.schemas import (
    CONNECTION_ID_PATTERN,
    ConnectionImport,
    ConnectionList,
    ConnectionOut,
    connection_out,
)
from tokenkeep.errors import NotFoundError
from tokenkeep.lifecycle.imports import create_imported_connection
from tokenkeep.oauth.errors import OAuthError
from tokenkeep.oauth.models import oauth_app_for
from tokenkeep.runtime import Gateway
from tokenkeep.store import Store
from tokenkeep.store.records import ConnectionStatus

__all__ = ["revoke_upstream", "router"]

router = APIRouter(prefix="/connections", tags=["connections"])

IdPath = Annotated[str, Path(pattern=CONNECTION_ID_PATTERN, description="connection id")]


@router.post(
    "",
    response_model=ConnectionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Import a connection from tokens the app already holds",
    responses={**BODY_ERRORS, **error_responses(404, 409)},
)
async def import_connection(
    body: ConnectionImport, store: StoreDep, gateway: GatewayDep
) -> ConnectionOut:
    """201 with the connection (no token in it). 404 unknown integration, 409 duplicate id."""
    connection = await create_imported_connection(store, gateway.settings, body.to_import())
    gateway.log.info(
        "connection imported",
        connection_id=connection.id,
        integration=connection.integration_key,
        org_id=connection.org_id or None,
    )
    return connection_out(connection)


@router.get(
    "", response_model=ConnectionList, summary="List connections", responses=error_responses(422)
)
async def list_connections(
    store: StoreDep,
    *,
    integration: Annotated[str | None, text_query(max_length=100)] = None,
    status_: Annotated[ConnectionStatus | None, Query(alias="status")] = None,
    org_id: Annotated[str | None, text_query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, text_query(min_length=1, max_length=500)] = None,
) -> ConnectionList:
    """Oldest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    page = await store.connections.list(
        integration=integration, status=status_, org_id=org_id, limit=limit, cursor=cursor
    )
    return ConnectionList(
        data=[connection_out(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{connection_id}",
    response_model=ConnectionOut,
    summary="Show a connection",
    responses=error_responses(404, 422),
)
async def get_connection(connection_id: IdPath, store: StoreDep) -> ConnectionOut:
    """404 ``not_found`` if there is no such connection."""
    return connection_out(await store.connections.get(connection_id))


@router.delete(
    "/{connection_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a connection",
    responses=error_responses(404, 422, 502),
)
async def delete_connection(
    connection_id: IdPath,
    store: StoreDep,
    gateway: GatewayDep,
    revoke: Annotated[bool, Query(description="also revoke the tokens upstream")] = False,
) -> Response:
    """204; 404 if unknown. The tokens are gone from the store when this returns."""
    if revoke:
        await revoke_upstream(gateway, store, connection_id)
    await store.connections.delete(connection_id)
    gateway.coordinator.forget(connection_id)
    gateway.log.info("connection deleted", connection_id=connection_id, revoked=revoke)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def revoke_upstream(gateway: Gateway, store: Store, connection_id: str) -> None:
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
