"""The token-endpoint client: every call tokenkeep makes to ``/services/oauth2/*``.

Transport only. It sends one request, maps aiohttp's exceptions ONCE into
:class:`~tokenkeep.oauth.errors.UpstreamTransportError`, maps a provider refusal into
:class:`~tokenkeep.oauth.errors.OAuthError`, and parses success with
:mod:`tokenkeep.providers.salesforce`, whose errors about an unusable answer
(:mod:`tokenkeep.providers.errors`) it maps here too, once: a bad signature to
:class:`~tokenkeep.oauth.errors.TokenSignatureError`, a malformed answer to
:class:`~tokenkeep.oauth.errors.UpstreamTransportError` (``bad_response``). It never
retries and never decides what a failure means: that is :mod:`tokenkeep.oauth.classify`
and the lifecycle's job.

Nothing here logs or raises a token: request bodies are built from ``Secret.reveal()`` at the
last moment, exceptions carry status/error words only, and responses wrap tokens in
:class:`~tokenkeep.secret.Secret`.

The session it is given, and the local address a response left from, are
:mod:`tokenkeep.oauth.session`'s (``create_session`` and ``local_address_of`` are
re-exported here for their importers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from tokenkeep.clock import Clock
from tokenkeep.config import is_loopback_url
from tokenkeep.oauth.errors import (
    IntegrationConfigError,
    OAuthError,
    TokenSignatureError,
    UpstreamTransportError,
)
from tokenkeep.oauth.jwt_bearer import mint_assertion
from tokenkeep.oauth.models import Identity, Introspection, OAuthApp, TokenResponse
from tokenkeep.oauth.session import local_address_of
from tokenkeep.observability.logging import get_logger
from tokenkeep.providers import salesforce
from tokenkeep.providers.catalog import Provider, get_provider
from tokenkeep.providers.errors import MalformedAnswerError, SignatureMismatchError
from tokenkeep.providers.salesforce_answers import retry_after_seconds
from tokenkeep.secret import Secret

__all__ = ["ProbeAnswer", "TokenEndpointClient"]

_log = get_logger("tokenkeep.oauth")

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """What a data-call probe saw: status, body head, the local address it left from."""

    status: int
    head: bytes
    local_address: str | None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]
    local_address: str | None


@contextmanager
def _provider_answer() -> Iterator[None]:
    """Map the provider parsers' errors to the OAuth layer's, once, at this edge."""
    try:
        yield
    except SignatureMismatchError as exc:
        raise TokenSignatureError(exc.endpoint) from None
    except MalformedAnswerError as exc:
        raise UpstreamTransportError(
            exc.message, kind="bad_response", status=exc.status, endpoint=exc.endpoint
        ) from None


def _may_carry_credentials(url: str) -> bool:
    """https anywhere; plain http only to loopback (the emulator, local tests)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "https":
        return True
    try:
        return scheme == "http" and is_loopback_url(url)
    except ValueError:  # unparseable: aiohttp would refuse it too
        return False


class TokenEndpointClient:
    """Talks to a provider's OAuth endpoints for one or many apps.

    ``session`` is owned by the caller (one per process is right: it pools connections).
    ``clock`` stamps :attr:`TokenResponse.received_at` and the JWT ``exp``.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        clock: Clock,
        timeout_seconds: float | None = None,
    ) -> None:
        self._session = session
        self._clock = clock
        self._timeout = (
            aiohttp.ClientTimeout(total=timeout_seconds) if timeout_seconds is not None else None
        )

    def __repr__(self) -> str:
        return f"TokenEndpointClient(clock={self._clock!r})"

    # -- grants ----------------------------------------------------------------------------

    async def exchange_code(
        self,
        app: OAuthApp,
        code: str,
        redirect_uri: str,
        code_verifier: str | None = None,
    ) -> TokenResponse:
        """Authorization code (+ PKCE) → tokens. The signature is checked when possible."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        return await self._token(app, form, grant="authorization_code")

    async def refresh(self, app: OAuthApp, refresh_token: Secret) -> TokenResponse:
        """Refresh-token grant. ``refresh_token`` in the answer is set only on rotation."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token.reveal()}
        return await self._token(app, form, grant="refresh_token")

    async def jwt_bearer(self, app: OAuthApp) -> TokenResponse:
        """JWT bearer grant: a fresh RS256 assertion each time; no refresh token comes back."""
        assertion = mint_assertion(app, clock=self._clock)
        form = {"grant_type": JWT_BEARER_GRANT, "assertion": assertion.reveal()}
        # The consumer key is in the assertion; Salesforce needs no client secret here.
        return await self._token(app, form, grant="jwt_bearer", client_auth=False)

    async def client_credentials(self, app: OAuthApp) -> TokenResponse:
        """Client-credentials grant, sent to the app's My Domain (its ``login_url``).

        Salesforce refuses this grant on the shared login hosts ("request not supported on
        this domain"); we refuse before sending (:class:`IntegrationConfigError`), with a
        message that says what to change.
        """
        provider = self._provider(app)
        if provider.is_login_host(app.login_url):
            raise IntegrationConfigError(
                "invalid_configuration",
                "client_credentials needs the org's My Domain URL as login_url "
                f"(got the shared login host {app.login_url})",
            )
        return await self._token(
            app, {"grant_type": "client_credentials"}, grant="client_credentials"
        )

    async def obtain(self, app: OAuthApp, refresh_token: Secret | None = None) -> TokenResponse:
        """A new token the way ``app.auth_mode`` gets one (what "refresh" means per mode)."""
        if app.auth_mode == "jwt_bearer":
            return await self.jwt_bearer(app)
        if app.auth_mode == "client_credentials":
            return await self.client_credentials(app)
        if refresh_token is None:
            raise IntegrationConfigError(
                "no_refresh_token", "an oauth2 connection without a refresh token cannot refresh"
            )
        return await self.refresh(app, refresh_token)

    # -- other endpoints -------------------------------------------------------------------

    async def introspect(
        self, app: OAuthApp, token: Secret, *, token_type_hint: str = "access_token"
    ) -> Introspection | None:
        """The provider's view of ``token``; None when it is not active (or not ours).

        Use :attr:`Introspection.lifetime_seconds` (``exp - iat``), a duration, to learn the
        expiry; never compare ``exp`` with our clock.
        """
        provider = self._provider(app)
        form = {"token": token.reveal(), "token_type_hint": token_type_hint}
        self._add_client_auth(app, form)
        answer = await self._send(
            "POST", app.login_url + provider.introspect_path, endpoint="introspect", data=form
        )
        result = salesforce.parse_introspection(self._json_object(answer, "introspect"))
        return result if result.active else None

    async def identity(self, id_url: str, access_token: Secret) -> Identity:
        """GET the identity URL with the token (user, org, username; 18-character ids)."""
        answer = await self._send(
            "GET",
            id_url,
            endpoint="identity",
            headers={
                "Authorization": f"Bearer {access_token.reveal()}",
                "Accept": "application/json",
            },
        )
        with _provider_answer():
            return salesforce.parse_identity(self._json_object(answer, "identity"), id_url=id_url)

    async def userinfo(self, app: OAuthApp, access_token: Secret) -> Identity:
        """GET ``/services/oauth2/userinfo`` on the app's login host (OpenID shape)."""
        provider = self._provider(app)
        answer = await self._send(
            "GET",
            app.login_url + provider.userinfo_path,
            endpoint="userinfo",
            headers={"Authorization": f"Bearer {access_token.reveal()}"},
        )
        with _provider_answer():
            return salesforce.parse_identity(self._json_object(answer, "userinfo"))

    async def probe(self, url: str, access_token: Secret) -> ProbeAnswer:
        """One authenticated GET of ``url`` (a data call the diagnosis makes): its status,
        the first bytes of its body and the local address it left from, whatever the status.
        Raises UpstreamTransportError when the host cannot be reached."""
        answer = await self._send(
            "GET",
            url,
            endpoint="probe",
            headers={"Authorization": f"Bearer {access_token.reveal()}"},
            any_status=True,
        )
        return ProbeAnswer(answer.status, answer.body[:16_384], answer.local_address)

    async def revoke(self, app: OAuthApp, token: Secret) -> None:
        """Revoke a refresh token (and its access tokens) or one access token."""
        provider = self._provider(app)
        await self._send(
            "POST",
            app.login_url + provider.revoke_path,
            endpoint="revoke",
            data={"token": token.reveal()},
        )

    def authorize_url(
        self,
        app: OAuthApp,
        *,
        state: str,
        code_challenge: str,
        redirect_uri: str,
        scopes: Sequence[str] | None = None,
        prompt: str | None = None,
        login_hint: str | None = None,
    ) -> str:
        """Where to send the user's browser to approve the app (code flow, PKCE S256)."""
        provider = self._provider(app)
        params = {
            "response_type": "code",
            "client_id": app.client_id,
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        chosen = tuple(scopes) if scopes is not None else app.scopes or provider.default_scopes
        if chosen:
            params["scope"] = " ".join(chosen)
        if prompt:
            params["prompt"] = prompt
        if login_hint:
            params["login_hint"] = login_hint
        return f"{app.login_url}{provider.authorize_path}?{urlencode(params)}"

    # -- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _provider(app: OAuthApp) -> Provider:
        return get_provider(app.provider)

    @staticmethod
    def _add_client_auth(app: OAuthApp, form: dict[str, str]) -> None:
        form["client_id"] = app.client_id
        if app.client_secret:
            form["client_secret"] = app.client_secret.reveal()

    async def _token(
        self, app: OAuthApp, form: dict[str, str], *, grant: str, client_auth: bool = True
    ) -> TokenResponse:
        if client_auth:
            self._add_client_auth(app, form)
        url = app.login_url + self._provider(app).token_path
        answer = await self._send("POST", url, endpoint="token", data=form, grant=grant)
        received_at = self._clock.time()
        with _provider_answer():
            return salesforce.parse_token_response(
                self._json_object(answer, "token"),
                received_at=received_at,
                client_secret=app.client_secret,
                local_address=answer.local_address,
                endpoint="token",
                # Only the code exchange refuses a mismatch: a refresh answer is never
                # thrown away (it may carry the only live, rotated refresh token).
                strict_signature=grant == "authorization_code",
            )

    @staticmethod
    def _json_object(answer: _Answer, endpoint: str) -> dict[str, Any]:
        try:
            data = json.loads(answer.body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise UpstreamTransportError(
                f"{endpoint} answered {answer.status} with a body that is not a JSON object",
                kind="bad_response",
                status=answer.status,
                endpoint=endpoint,
            )
        return data

    async def _send(
        self,
        method: str,
        url: str,
        *,
        endpoint: str,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        grant: str | None = None,
        any_status: bool = False,
    ) -> _Answer:
        """One request; returns a 2xx answer (any answer with ``any_status``) or raises
        OAuthError / UpstreamTransportError."""
        if not _may_carry_credentials(url):
            # Defence in depth (the API validates configured URLs): an ``id`` URL comes from a
            # provider answer, and a token must never cross the network in clear.
            raise IntegrationConfigError(
                "invalid_configuration",
                f"{endpoint}: refusing to send credentials over plain http to a non-loopback host",
            )
        started = self._clock.monotonic()
        kwargs: dict[str, Any] = {"data": data, "headers": dict(headers or {})}
        kwargs["headers"].setdefault("Accept", "application/json")
        if self._timeout is not None:
            kwargs["timeout"] = self._timeout
        try:
            async with self._session.request(method, url, allow_redirects=False, **kwargs) as resp:
                local = local_address_of(resp)
                body = await resp.read()
                answer = _Answer(resp.status, body, dict(resp.headers), local)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTransportError(
                f"{endpoint} timed out", kind="timeout", endpoint=endpoint
            ) from None
        except aiohttp.InvalidURL:
            raise IntegrationConfigError(
                "invalid_configuration", f"{endpoint}: invalid URL for the provider endpoint"
            ) from None
        except aiohttp.ClientError as exc:
            # ClientConnectorError, ServerDisconnectedError, ClientPayloadError, TLS errors...
            # The exception text can quote the request; keep only its type.
            raise UpstreamTransportError(
                f"{endpoint} unreachable ({type(exc).__name__})",
                kind="connection",
                endpoint=endpoint,
            ) from None
        except OSError as exc:
            raise UpstreamTransportError(
                f"{endpoint} unreachable ({type(exc).__name__})",
                kind="connection",
                endpoint=endpoint,
            ) from None
        _log.debug(
            "oauth.request",
            endpoint=endpoint,
            grant_type=grant,
            status=answer.status,
            duration_ms=round((self._clock.monotonic() - started) * 1000, 1),
        )
        if 200 <= answer.status < 300 or any_status:
            return answer
        if answer.status >= 500 or answer.status == 429:
            raise UpstreamTransportError(
                f"{endpoint} answered {answer.status}",
                kind="http_status",
                status=answer.status,
                retry_after=retry_after_seconds(answer.headers),
                endpoint=endpoint,
            )
        error, description = salesforce.parse_oauth_error(answer.status, answer.body)
        raise OAuthError(
            status=answer.status, error=error, error_description=description, endpoint=endpoint
        )
