"""Request and response bodies of the control API.

Requests forbid unknown fields (a typo is a 422, not a silently ignored setting). Responses
are built from store rows and carry no secret: only ``has_*`` flags and fingerprints.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from tokenkeep.api.inputs import (
    HTTPS_URL_PATTERN,
    EpochMillis,
    Metadata,
    PemText,
    SecretText,
    Text,
    Url,
)
from tokenkeep.lifecycle.imports import ConnectionToImport
from tokenkeep.lifecycle.integrations import IntegrationSpec
from tokenkeep.secret import Secret
from tokenkeep.store.records import Connection, Integration
from tokenkeep.store.sentinel import KEEP, Keep

__all__ = [
    "CONNECTION_ID_PATTERN",
    "ConnectionImport",
    "ConnectionList",
    "ConnectionOut",
    "CredentialsIn",
    "IntegrationIn",
    "IntegrationList",
    "IntegrationOut",
    "connection_out",
    "integration_out",
]

# Connection ids appear in URLs (`/connections/{id}`, `/c/{id}/...`): keep them URL-safe.
# Every max_length below matches its column in tokenkeep.store.models: PostgreSQL refuses
# longer values, and that must be a 422 here, not a 500 from the database.
CONNECTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,99}$"
INTEGRATION_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


# A URL that receives tokens: the document states the https-only contract (the enforced
# pattern also admits http, which the https rule then refuses unless the loopback
# development setting allows it; tokenkeep.urls.upstream_url_problem).
_TOKEN_URL: dict[str, Any] = {
    "pattern": HTTPS_URL_PATTERN,
    "description": "https:// (http:// only for loopback hosts with "
    "TOKENKEEP_ALLOW_INSECURE_LOOPBACK=true)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute https:// URL")
    return value.rstrip("/")


class IntegrationIn(_Strict):
    """``PUT /integrations/{key}``: an OAuth app (a Salesforce connected app)."""

    provider: Text = Field(default="salesforce", min_length=1, max_length=50)
    client_id: Text = Field(min_length=1, max_length=500)
    client_secret: SecretText | None = None
    login_url: Url = Field(
        default="https://login.salesforce.com", max_length=500, json_schema_extra=_TOKEN_URL
    )
    scopes: list[Annotated[Text, Field(min_length=1, max_length=200)]] = Field(default_factory=list)
    auth_mode: Literal["oauth2", "jwt_bearer", "client_credentials"] = "oauth2"
    private_key: PemText | None = None
    username: Text | None = Field(default=None, max_length=255)
    session_timeout_seconds: int | None = Field(default=None, ge=60, le=7 * 24 * 3600)

    _login_url = field_validator("login_url")(_check_http_url)

    def to_spec(self) -> IntegrationSpec:
        """What to store: a secret field left out of the request keeps the stored value."""
        return IntegrationSpec(
            provider=self.provider,
            client_id=self.client_id,
            client_secret=self._secret("client_secret"),
            login_url=self.login_url,
            scopes=self.scopes,
            auth_mode=self.auth_mode,
            private_key=self._secret("private_key"),
            username=self.username,
            session_timeout_seconds=self.session_timeout_seconds,
        )

    def _secret(self, field: str) -> Secret | Keep | None:
        if field not in self.model_fields_set:
            return KEEP
        value = getattr(self, field)
        if isinstance(value, SecretStr) and value.get_secret_value():
            return Secret(value.get_secret_value())
        return None


class IntegrationOut(BaseModel):
    """An integration as the API shows it: secrets only as ``has_*`` flags."""

    key: str
    provider: str
    client_id: str
    login_url: str
    scopes: list[str]
    auth_mode: str
    username: str | None
    session_timeout_seconds: int | None
    has_client_secret: bool
    has_private_key: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None


def integration_out(integration: Integration) -> IntegrationOut:
    """The API view of an integration: secrets only as ``has_*`` flags."""
    return IntegrationOut(
        key=integration.key,
        provider=integration.provider,
        client_id=integration.client_id,
        login_url=integration.login_url,
        scopes=list(integration.scopes),
        auth_mode=integration.auth_mode,
        username=integration.username,
        session_timeout_seconds=integration.session_timeout_seconds,
        has_client_secret=integration.has_client_secret,
        has_private_key=integration.has_private_key,
        created_at=integration.created_at,
        updated_at=integration.updated_at,
    )


class IntegrationList(BaseModel):
    data: list[IntegrationOut]


class CredentialsIn(_Strict):
    """Tokens the app already holds (a Salesforce token response, or part of it)."""

    access_token: SecretText = Field(min_length=1)
    refresh_token: SecretText | None = None
    instance_url: Url = Field(max_length=500, json_schema_extra=_TOKEN_URL)
    id: Text | None = Field(default=None, max_length=500)
    issued_at: EpochMillis | None = None

    _instance_url = field_validator("instance_url")(_check_http_url)


class ConnectionImport(_Strict):
    """``POST /connections``: import a connection from tokens the app already holds."""

    connection_id: str | None = Field(default=None, pattern=CONNECTION_ID_PATTERN)
    integration: Text = Field(min_length=1, max_length=100)
    credentials: CredentialsIn
    metadata: Metadata = Field(default_factory=dict)

    def to_import(self) -> ConnectionToImport:
        """The tokens to import (an empty refresh token counts as none)."""
        creds = self.credentials
        refresh = creds.refresh_token.get_secret_value() if creds.refresh_token else ""
        return ConnectionToImport(
            integration=self.integration,
            access_token=Secret(creds.access_token.get_secret_value()),
            instance_url=creds.instance_url,
            refresh_token=Secret(refresh) if refresh else None,
            id_url=creds.id,
            issued_at=creds.issued_at,
            connection_id=self.connection_id,
            metadata=self.metadata,
        )


class ConnectionOut(BaseModel):
    """A connection as the API shows it: never a token."""

    id: str
    integration: str
    status: str
    status_reason: str | None
    org_id: str | None
    user_id: str | None
    username: str | None
    instance_url: str
    has_refresh_token: bool
    refresh_token_fingerprint: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    last_used_from_address: str | None = None
    metadata: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ConnectionList(BaseModel):
    data: list[ConnectionOut]
    next_cursor: str | None


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
        last_used_from_address=connection.last_used_from_address,
        metadata=dict(connection.metadata),
        created_at=connection.created_at,
        updated_at=connection.updated_at,
    )
