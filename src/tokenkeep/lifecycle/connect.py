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
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.errors import TokenkeepError, ValidationError
from tokenkeep.lifecycle.connected import connected_columns, store_connected
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import OAuthError, UpstreamTransportError
from tokenkeep.oauth.models import Identity, OAuthApp, TokenResponse, oauth_app_for
from tokenkeep.oauth.pkce import new_pkce_pair, new_state
from tokenkeep.observability.logging import get_logger
from tokenkeep.store import Integration, Store
from tokenkeep.store.connect_sessions import CODE_VERIFIER_FIELD
from tokenkeep.store.records import ConnectSession
from tokenkeep.urls import upstream_url_problem
from tokenkeep.vocabulary import AuthMode

__all__ = ["CODE_VERIFIER_FIELD", "ConnectFlow", "ConnectFlowError", "ConnectResult"]

_log = get_logger("tokenkeep.connect")
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
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.clock: Clock = clock or store.clock
        self.coordinator = coordinator
        self.redirect_uri = settings.base_url + CALLBACK_PATH
        # Spreads the first proactive refresh of connections made together (tests seed it).
        self._rng = rng or random.SystemRandom()

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
        await self.store.connect_sessions.create(
            _hash(token),
            integration_key=integration_key,
            connection_id=connection_id,
            metadata=dict(metadata or {}),
            return_url=return_url,
            expires_at=expires_at,
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
        row = self._check_usable(await self.store.connect_sessions.find(token_hash), now)
        integration = await self.store.integrations.get(row.integration_key, with_secrets=True)
        if integration.auth_mode != AuthMode.OAUTH2:
            return await self._begin_direct(row, now)
        app = oauth_app_for(integration)
        state = new_state()
        pkce = new_pkce_pair()
        bound = await self.store.connect_sessions.bind(
            token_hash, state_hash=_hash(state), code_verifier=pkce.code_verifier
        )
        if not bound:
            raise ConnectFlowError(
                "replayed", "This connect link has already been used.", status_code=410
            )
        return self.client.authorize_url(
            app, state=state, code_challenge=pkce.code_challenge, redirect_uri=self.redirect_uri
        )

    async def _begin_direct(self, row: ConnectSession, now: datetime) -> ConnectResult:
        if not await self.store.connect_sessions.consume(row.token_hash, now=now):
            raise ConnectFlowError(
                "replayed", "This connect link has already been used.", status_code=410
            )
        try:
            done = await self.connect_direct(
                row.integration_key, connection_id=row.connection_id, metadata=row.metadata
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
    def _check_usable(row: ConnectSession | None, now: datetime) -> ConnectSession:
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
        # Single use: consumed before anything else, so a replay finds it used.
        found, consumed = await self.store.connect_sessions.consume_by_state(state_hash, now=now)
        if found is None:
            raise ConnectFlowError(
                "state_mismatch", "This sign-in answer does not belong to any connect session."
            )
        row = self._check_usable(found, now)
        if not consumed:
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
        verifier = row.code_verifier.reveal() if row.code_verifier is not None else None
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
        connection_id, created, previous_status = await self._finish(
            integration,
            app,
            tokens,
            identity,
            connection_id=row.connection_id,
            metadata=row.metadata,
        )
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
        if integration.auth_mode == AuthMode.OAUTH2:
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
        conn_id, created, _ = await self._finish(
            integration,
            app,
            tokens,
            identity,
            connection_id=connection_id,
            metadata=dict(metadata or {}),
            keep_refresh_token=False,
        )
        return ConnectResult(
            connection_id=conn_id,
            org_id=identity.org_id,
            username=identity.username,
            created=created,
            return_url=None,
        )

    async def _finish(
        self,
        integration: Integration,
        app: OAuthApp,
        tokens: TokenResponse,
        identity: Identity,
        *,
        connection_id: str | None,
        metadata: dict[str, Any],
        keep_refresh_token: bool = True,
    ) -> tuple[str, bool, str | None]:
        """Store a finished connect (:mod:`tokenkeep.lifecycle.connected`) and drop any
        cached token of the connection it replaces: (id, created, previous status)."""
        columns = await connected_columns(
            self.client,
            self.settings,
            self._rng,
            integration=integration,
            app=app,
            tokens=tokens,
            identity=identity,
        )
        done = await store_connected(
            self.store,
            self.settings,
            integration_key=integration.key,
            connection_id=connection_id,
            metadata=metadata,
            tokens=tokens,
            columns=columns,
            keep_refresh_token=keep_refresh_token,
        )
        if self.coordinator is not None:
            self.coordinator.forget(done[0])
        return done
