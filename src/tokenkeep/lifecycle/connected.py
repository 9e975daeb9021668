"""What a finished connect writes: the row's columns (who, where, the expiry plan) and the
one transaction that stores the connection with its outbox event and log entry.

Shared by the hosted flow (:meth:`ConnectFlow.complete`) and the direct grants
(:meth:`ConnectFlow.connect_direct`) of :mod:`tokenkeep.lifecycle.connect`.
"""

from __future__ import annotations

import random
from typing import Any

from tokenkeep.clock import utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.lifecycle.expiry import configured_timeout, plan_expiry
from tokenkeep.lifecycle.timeouts import introspected_lifetime
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.models import Identity, OAuthApp, TokenResponse
from tokenkeep.store import Integration, Store
from tokenkeep.vocabulary import EventType, Status

__all__ = ["connected_columns", "store_connected"]


async def connected_columns(
    client: TokenEndpointClient,
    settings: Settings,
    rng: random.Random,
    *,
    integration: Integration,
    app: OAuthApp,
    tokens: TokenResponse,
    identity: Identity,
) -> dict[str, Any]:
    """The row columns of a finished connect: who, where, and the expiry plan
    (introspection when possible, else the configured session timeout)."""
    introspected = await introspected_lifetime(client, app, tokens.access_token)
    plan = plan_expiry(
        tokens.received_at,
        configured=configured_timeout(integration),
        introspected=introspected,
        margin=settings.refresh_margin_seconds,
        rng=rng,
    )
    return {
        "org_id": identity.org_id,
        "user_id": identity.user_id,
        "username": identity.username,
        "instance_url": tokens.instance_url,
        "id_url": tokens.id_url,
        "issued_at": utc_from_timestamp(tokens.received_at),
        "expires_at": plan.expires_at,
        "next_refresh_at": plan.next_refresh_at,
        "issued_to_address": tokens.local_address,
    }


async def store_connected(
    store: Store,
    settings: Settings,
    *,
    integration_key: str,
    connection_id: str | None,
    metadata: dict[str, Any],
    tokens: TokenResponse,
    columns: dict[str, Any],
    keep_refresh_token: bool = True,
) -> tuple[str, bool, str | None]:
    """Create or update the connection, its outbox event and log entry: one commit."""
    org_id = columns["org_id"]
    async with store.db.write() as session:
        done = await store.refresh_state.upsert_connected(
            session,
            integration_key=integration_key,
            connection_id=connection_id,
            update_existing=settings.connect_update_existing,
            metadata=metadata,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token if keep_refresh_token else None,
            columns=columns,
        )
        payload = {
            "connection_id": done.connection_id,
            "org_id": org_id,
            "integration": integration_key,
            "metadata": dict(metadata),
        }
        if done.created:
            store.outbox.add_event(
                session,
                EventType.CONNECTION_CREATED,
                connection_id=done.connection_id,
                org_id=org_id,
                payload=payload,
            )
        elif done.previous_status != Status.ACTIVE:
            # A new grant replaced the old one (version bumped: a refresh in flight on
            # the old grant is fenced off).
            store.outbox.add_event(
                session,
                EventType.CONNECTION_RECOVERED,
                connection_id=done.connection_id,
                org_id=org_id,
                payload={**payload, "previous_status": done.previous_status},
            )
            store.operations.status_changed(
                session,
                done.connection_id,
                org_id,
                previous=done.previous_status,
                status=Status.ACTIVE,
                reason=None,
                by="connect",
            )
        await store.operations.log(
            "connect",
            outcome="ok",
            connection_id=done.connection_id,
            org_id=org_id,
            detail={
                "created": done.created,
                "integration": integration_key,
                "user_id": columns.get("user_id"),
                "access_token_fp": tokens.access_token.fingerprint,
                "refresh_token_fp": tokens.refresh_token.fingerprint
                if tokens.refresh_token is not None
                else None,
            },
            session=session,
        )
    return done.connection_id, done.created, done.previous_status
