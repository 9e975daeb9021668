"""The hosted connect flow: authorization code + PKCE S256 + state, as plain logic.

1. :meth:`ConnectFlow.create_session` — the app asks for a connect link: a random,
   short-lived token (only its SHA-256 is stored) bound to an integration, an optional
   connection id to (re)connect, metadata and a ``return_url``.
2. :meth:`ConnectFlow.begin` — the user's browser opens the link: a fresh ``state`` (stored
   hashed) and a PKCE verifier (stored encrypted) are bound to the session, and the browser
   goes to the provider's authorize URL. Opening the link again replaces them (the newest
   tab wins) until the flow completes.
3. :meth:`ConnectFlow.complete` — the provider redirects back with ``code`` and ``state``:
   the session is consumed FIRST (a conditional update: a replayed callback finds it used),
   then the code is exchanged (with the verifier; the response ``signature`` is verified),
   the identity URL names org, user and username, introspection gives the real lifetime,
   and the connection is stored encrypted in ONE transaction with its outbox event. Any
   failure before that transaction stores nothing but the consumed session.

Failures raise :class:`ConnectFlowError` with a ``reason`` word (``unknown_session``,
``expired``, ``replayed``, ``state_mismatch``, ``denied``, ``token_error``,
``invalid_signature``, ``identity_error``) and a sentence fit for the user's page.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import Table, select, update

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.errors import TokenkeepError, ValidationError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator, oauth_app_for
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.oauth.expiry import estimate_lifetime, next_refresh_at
from tokenkeep.oauth.pkce import new_pkce_pair, new_state
from tokenkeep.observability.logging import get_logger
from tokenkeep.secret import fingerprint
from tokenkeep.store import Store
from tokenkeep.store.connections import (
    ACCESS_TOKEN_FIELD,
    REFRESH_TOKEN_FIELD,
    new_connection_id,
)
from tokenkeep.store.models import ConnectionRow, ConnectSessionRow
from tokenkeep.urls import upstream_url_problem

__all__ = ["CODE_VERIFIER_FIELD", "ConnectFlow", "ConnectFlowError", "ConnectResult"]

_log = get_logger("tokenkeep.connect")
_S = cast(Table, ConnectSessionRow.__table__)
_C = cast(Table, ConnectionRow.__table__)
CODE_VERIFIER_FIELD = "connect_sessions.code_verifier"
CALLBACK_PATH = "/oauth/callback"


class ConnectFlowError(TokenkeepError):
    """The connect flow cannot go on; ``reason`` is a stable word, the message is for humans."""

    code = "connect_failed"
    status_code = 400

    def __init__(self, reason: str, message: str, *, status_code: int = 400) -> None:
        super().__init__(message, details={"reason": reason})
        self.reason = reason
        self.http_status = status_code


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """A finished connect: the stored connection and where to send the browser."""

    connection_id: str
    org_id: str
    username: str | None
    created: bool
    return_url: str | None


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _with_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class ConnectFlow:
    """The three steps of the hosted connect flow, over the store and the token client."""

    def __init__(
        self,
        store: Store,
        client: TokenEndpointClient,
        *,
        settings: Settings,
        clock: Clock | None = None,
        coordinator: RefreshCoordinator | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.clock: Clock = clock or store.clock
        self.coordinator = coordinator
        self.redirect_uri = settings.base_url + CALLBACK_PATH

    # -- 1. the app asks for a link -------------------------------------------------------
    async def create_session(
        self,
        integration_key: str,
        *,
        connection_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        return_url: str | None = None,
    ) -> tuple[str, datetime]:
        """A single-use connect URL and when it expires."""
        await self.store.integrations.get(integration_key)  # NotFoundError
        if return_url is not None and urlsplit(return_url).scheme not in ("http", "https"):
            raise ValidationError("return_url must be an http(s) URL")
        token = secrets.token_urlsafe(32)
        now = self.clock.now()
        expires_at = now + timedelta(seconds=self.settings.connect_session_ttl_seconds)
        async with self.store.db.write() as session:
            session.add(
                ConnectSessionRow(
                    token_hash=_hash(token),
                    integration_key=integration_key,
                    connection_id=connection_id,
                    metadata_=dict(metadata or {}),
                    return_url=return_url,
                    state_hash=None,
                    code_verifier_enc=None,
                    key_id=None,
                    expires_at=expires_at,
                    used_at=None,
                    created_at=now,
                )
            )
        return f"{self.settings.base_url}/connect/{token}", expires_at

    # -- 2. the browser opens the link ----------------------------------------------------
    async def begin(self, token: str) -> str | ConnectResult:
        """Bind a fresh state and PKCE verifier to the session; the authorize URL.

        For a JWT-bearer or client-credentials integration there is no consent page: the
        session is consumed and the connection minted at once (a :class:`ConnectResult`).
        """
        token_hash = _hash(token)
        now = self.clock.now()
        async with self.store.db.read() as session:
            row = (
                await session.execute(select(_S).where(_S.c.token_hash == token_hash))
            ).one_or_none()
        row = self._check_usable(row, now)
        integration = await self.store.integrations.get(row.integration_key, with_secrets=True)
        if integration.auth_mode != "oauth2":
            return await self._begin_direct(row, now)
        app = oauth_app_for(integration)
        state = new_state()
        pkce = new_pkce_pair()
        keyring = self.store.keyring
        async with self.store.db.write() as session:
            result = await session.execute(
                update(_S)
                .where(_S.c.token_hash == token_hash, _S.c.used_at.is_(None))
                .values(
                    state_hash=_hash(state),
                    code_verifier_enc=keyring.encrypt(
                        pkce.code_verifier, row_id=token_hash, field=CODE_VERIFIER_FIELD
                    ),
                    key_id=keyring.primary_key_id,
                )
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise ConnectFlowError(
                    "replayed", "This connect link has already been used.", status_code=410
                )
        return self.client.authorize_url(
            app, state=state, code_challenge=pkce.code_challenge, redirect_uri=self.redirect_uri
        )

    async def _begin_direct(self, row: Any, now: datetime) -> ConnectResult:
        async with self.store.db.write() as session:
            result = await session.execute(
                update(_S)
                .where(_S.c.token_hash == row.token_hash, _S.c.used_at.is_(None))
                .values(used_at=now)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise ConnectFlowError(
                    "replayed", "This connect link has already been used.", status_code=410
                )
        try:
            done = await self.connect_direct(
                row.integration_key,
                connection_id=row.connection_id,
                metadata=dict(row._mapping["metadata"] or {}),
            )
        except (OAuthError, UpstreamTransportError) as exc:
            raise ConnectFlowError(
                "token_error", f"The provider did not issue a token: {exc.message}"
            ) from exc
        return_url = (
            _with_query(
                row.return_url, {"connection_id": done.connection_id, "status": "connected"}
            )
            if row.return_url
            else None
        )
        return ConnectResult(
            connection_id=done.connection_id,
            org_id=done.org_id,
            username=done.username,
            created=done.created,
            return_url=return_url,
        )

    def _check_instance_url(self, instance_url: str) -> None:
        """Refuse to store a connection whose instance_url may not receive tokens."""
        problem = upstream_url_problem(
            instance_url, allow_insecure_loopback=self.settings.allow_insecure_loopback
        )
        if problem is not None:
            raise ConnectFlowError(
                "insecure_instance_url",
                f"The provider named the org's address {instance_url}, which {problem}. "
                "Nothing was stored.",
            )

    @staticmethod
    def _check_usable(row: Any, now: datetime) -> Any:
        """The session row if it can still be used; else the reason it cannot."""
        if row is None:
            raise ConnectFlowError(
                "unknown_session", "This connect link is not valid.", status_code=404
            )
        if row.used_at is not None:
            raise ConnectFlowError(
                "replayed",
                "This connect link has already been used. Ask for a new one.",
                status_code=410,
            )
        if row.expires_at <= now:
            raise ConnectFlowError(
                "expired", "This connect link has expired. Ask for a new one.", status_code=410
            )
        return row

    # -- 3. the provider redirects back ---------------------------------------------------
    async def complete(
        self,
        *,
        state: str | None,
        code: str | None,
        error: str | None = None,
        error_description: str | None = None,
    ) -> ConnectResult:
        """Consume the session, exchange the code, store the connection (all or nothing)."""
        if not state:
            raise ConnectFlowError("state_mismatch", "The sign-in answer carried no state.")
        now = self.clock.now()
        state_hash = _hash(state)
        async with self.store.db.write() as session:
            row = (
                await session.execute(select(_S).where(_S.c.state_hash == state_hash))
            ).one_or_none()
            if row is None:
                raise ConnectFlowError(
                    "state_mismatch",
                    "This sign-in answer does not belong to any connect session.",
                )
            row = self._check_usable(row, now)
            # Single use: consumed before anything else, so a replay finds it used. The
            # UPDATE is conditional and must hit the row: two concurrent callbacks may both
            # have read it unused (PostgreSQL, READ COMMITTED); only one consumes it.
            consumed = await session.execute(
                update(_S)
                .where(_S.c.token_hash == row.token_hash, _S.c.used_at.is_(None))
                .values(used_at=now)
            )
            if consumed.rowcount != 1:  # type: ignore[attr-defined]
                raise ConnectFlowError(
                    "replayed",
                    "This connect link has already been used. Ask for a new one.",
                    status_code=410,
                )
        if error:
            if error == "access_denied":
                reason, message = "denied", "The connection was not approved"
            else:
                reason, message = "provider_error", f"The provider refused the sign-in ({error})"
            detail = f": {error_description}" if error_description else "."
            raise ConnectFlowError(reason, message + detail)
        if not code:
            raise ConnectFlowError("token_error", "The sign-in answer carried no code.")
        verifier = (
            self.store.keyring.decrypt(
                row.code_verifier_enc, row_id=row.token_hash, field=CODE_VERIFIER_FIELD
            )
            if row.code_verifier_enc
            else None
        )
        integration = await self.store.integrations.get(row.integration_key, with_secrets=True)
        app = oauth_app_for(integration)
        try:
            tokens = await self.client.exchange_code(app, code, self.redirect_uri, verifier)
        except OAuthError as exc:
            reason = "invalid_signature" if exc.error == "invalid_signature" else "token_error"
            raise ConnectFlowError(
                reason, f"The provider did not issue a token: {exc.message}"
            ) from exc
        except UpstreamTransportError as exc:
            raise ConnectFlowError(
                "token_error", f"The provider's token endpoint failed: {exc.message}"
            ) from exc
        if app.client_secret and not tokens.signature_verified:
            raise ConnectFlowError(
                "invalid_signature", "The token answer was not signed: nothing was stored."
            )
        self._check_instance_url(tokens.instance_url)
        if not tokens.id_url:
            raise ConnectFlowError("identity_error", "The token answer named no identity URL.")
        try:
            identity = await self.client.identity(tokens.id_url, tokens.access_token)
        except (OAuthError, UpstreamTransportError) as exc:
            raise ConnectFlowError(
                "identity_error", f"The provider did not confirm the identity: {exc.message}"
            ) from exc
        introspected = None
        if app.client_secret:  # introspection needs client authentication
            try:
                result = await self.client.introspect(app, tokens.access_token)
                introspected = result.lifetime_seconds if result else None
            except (OAuthError, UpstreamTransportError) as exc:
                # Only the expiry is at stake: issued_at + the session timeout stands.
                _log.info("introspection failed at connect; using the estimate", error=str(exc))
        lifetime = estimate_lifetime(introspected, integration.session_timeout_seconds)
        expires = tokens.received_at + lifetime
        refresh_at = next_refresh_at(
            expires, lifetime, self.settings.refresh_margin_seconds, 0.1, secrets.SystemRandom()
        )
        connection_id, created, previous_status = await self._store_connection(
            integration_key=row.integration_key,
            connection_id=row.connection_id,
            metadata=dict(row._mapping["metadata"] or {}),
            org_id=identity.org_id,
            user_id=identity.user_id,
            username=identity.username,
            instance_url=tokens.instance_url,
            id_url=tokens.id_url,
            access_token=tokens.access_token.reveal(),
            refresh_token=tokens.refresh_token.reveal() if tokens.refresh_token else None,
            issued_at=utc_from_timestamp(tokens.received_at),
            expires_at=utc_from_timestamp(expires),
            next_refresh_at=utc_from_timestamp(refresh_at),
            issued_to_address=tokens.local_address,
        )
        if self.coordinator is not None:
            self.coordinator.forget(connection_id)
        _log.info(
            "connection connected",
            connection_id=connection_id,
            org_id=identity.org_id,
            created=created,
            previous_status=previous_status,
        )
        return_url = (
            _with_query(row.return_url, {"connection_id": connection_id, "status": "connected"})
            if row.return_url
            else None
        )
        return ConnectResult(
            connection_id=connection_id,
            org_id=identity.org_id,
            username=identity.username,
            created=created,
            return_url=return_url,
        )

    # -- JWT bearer and client credentials: no user in the loop ---------------------------
    async def connect_direct(
        self,
        integration_key: str,
        *,
        connection_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ConnectResult:
        """Mint a token for a ``jwt_bearer`` or ``client_credentials`` integration and store
        the connection (there is no refresh token: "refresh" means minting again)."""
        integration = await self.store.integrations.get(integration_key, with_secrets=True)
        if integration.auth_mode == "oauth2":
            raise ValidationError(
                f"integration {integration_key!r} uses oauth2: the user must consent through "
                "a connect session"
            )
        app = oauth_app_for(integration)
        tokens = await self.client.obtain(app)
        self._check_instance_url(tokens.instance_url)
        if not tokens.id_url:
            raise ConnectFlowError("identity_error", "The token answer named no identity URL.")
        identity = await self.client.identity(tokens.id_url, tokens.access_token)
        introspected = None
        if app.client_secret:  # introspection needs client authentication
            try:
                result = await self.client.introspect(app, tokens.access_token)
                introspected = result.lifetime_seconds if result else None
            except (OAuthError, UpstreamTransportError):
                introspected = None  # the configured timeout stands
        lifetime = estimate_lifetime(introspected, integration.session_timeout_seconds)
        expires = tokens.received_at + lifetime
        refresh_at = next_refresh_at(
            expires, lifetime, self.settings.refresh_margin_seconds, 0.1, secrets.SystemRandom()
        )
        conn_id, created, _ = await self._store_connection(
            integration_key=integration_key,
            connection_id=connection_id,
            metadata=dict(metadata or {}),
            org_id=identity.org_id,
            user_id=identity.user_id,
            username=identity.username,
            instance_url=tokens.instance_url,
            id_url=tokens.id_url,
            access_token=tokens.access_token.reveal(),
            refresh_token=None,
            issued_at=utc_from_timestamp(tokens.received_at),
            expires_at=utc_from_timestamp(expires),
            next_refresh_at=utc_from_timestamp(refresh_at),
            issued_to_address=tokens.local_address,
        )
        if self.coordinator is not None:
            self.coordinator.forget(conn_id)
        return ConnectResult(
            connection_id=conn_id,
            org_id=identity.org_id,
            username=identity.username,
            created=created,
            return_url=None,
        )

    async def _store_connection(
        self,
        *,
        integration_key: str,
        connection_id: str | None,
        metadata: dict[str, Any],
        **fields: Any,
    ) -> tuple[str, bool, str | None]:
        """Create or update the connection, its outbox event and log entry: one commit."""
        keyring = self.store.keyring
        now = self.clock.now()
        async with self.store.db.write() as session:
            existing = None
            if connection_id:
                existing = (
                    await session.execute(
                        select(_C.c.id, _C.c.status).where(_C.c.id == connection_id)
                    )
                ).one_or_none()
            elif self.settings.connect_update_existing:
                existing = (
                    await session.execute(
                        select(_C.c.id, _C.c.status)
                        .where(
                            _C.c.integration_key == integration_key,
                            _C.c.org_id == fields["org_id"],
                            _C.c.user_id == fields["user_id"],
                        )
                        .order_by(_C.c.created_at.desc())
                        .limit(1)
                    )
                ).one_or_none()
            conn_id = existing.id if existing else (connection_id or new_connection_id())
            refresh = fields.pop("refresh_token")
            access = fields.pop("access_token")
            values: dict[str, Any] = {
                **fields,
                "access_token_enc": keyring.encrypt(
                    access, row_id=conn_id, field=ACCESS_TOKEN_FIELD
                ),
                "refresh_token_enc": (
                    keyring.encrypt(refresh, row_id=conn_id, field=REFRESH_TOKEN_FIELD)
                    if refresh
                    else None
                ),
                "refresh_token_fingerprint": fingerprint(refresh) if refresh else None,
                "key_id": keyring.primary_key_id,
                "status": "active",
                "status_reason": None,
                "refresh_attempts": 0,
                "last_error": None,
                "lease_owner": None,
                "lease_until": None,
                "updated_at": now,
            }
            payload = {
                "connection_id": conn_id,
                "org_id": fields["org_id"],
                "integration": integration_key,
                "metadata": dict(metadata),
            }
            if existing:
                # A new grant replaces the old: bump the version so any refresh in flight
                # on the old grant is fenced off.
                await session.execute(
                    update(_C).where(_C.c.id == conn_id).values(**values, version=_C.c.version + 1)
                )
                if existing.status != "active":
                    self.store.outbox.add_event(
                        session,
                        "connection.recovered",
                        connection_id=conn_id,
                        org_id=fields["org_id"],
                        payload={**payload, "previous_status": existing.status},
                    )
            else:
                session.add(
                    ConnectionRow(
                        id=conn_id,
                        integration_key=integration_key,
                        version=1,
                        last_refresh_at=None,
                        metadata_=dict(metadata),
                        created_at=now,
                        **values,
                    )
                )
                self.store.outbox.add_event(
                    session,
                    "connection.created",
                    connection_id=conn_id,
                    org_id=fields["org_id"],
                    payload=payload,
                )
            await self.store.operations.log(
                "connect",
                outcome="ok",
                connection_id=conn_id,
                org_id=fields["org_id"],
                detail={"created": existing is None, "integration": integration_key},
                session=session,
            )
        return conn_id, existing is None, existing.status if existing else None
