"""Request and response bodies of the control API.

Requests forbid unknown fields (a typo is a 422, not a silently ignored setting). Responses
are built from store rows and carry no secret: only ``has_*`` flags and fingerprints.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "CONNECTION_ID_PATTERN",
    "ConnectionImport",
    "ConnectionList",
    "ConnectionOut",
    "CredentialsIn",
    "IntegrationIn",
    "IntegrationList",
    "IntegrationOut",
    "parse_identity_url",
]

# Connection ids appear in URLs (`/connections/{id}`, `/c/{id}/...`): keep them URL-safe.
# Every max_length below matches its column in tokenkeep.store.models: PostgreSQL refuses
# longer values, and that must be a 422 here, not a 500 from the database.
CONNECTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,99}$"
INTEGRATION_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SF_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an absolute https:// URL")
    return value.rstrip("/")


class IntegrationIn(_Strict):
    """``PUT /integrations/{key}``: an OAuth app (a Salesforce connected app)."""

    provider: str = Field(default="salesforce", min_length=1, max_length=50)
    client_id: str = Field(min_length=1, max_length=500)
    client_secret: SecretStr | None = None
    login_url: str = Field(default="https://login.salesforce.com", max_length=500)
    scopes: list[str] = Field(default_factory=list)
    auth_mode: Literal["oauth2", "jwt_bearer", "client_credentials"] = "oauth2"
    private_key: SecretStr | None = None
    username: str | None = Field(default=None, max_length=255)
    session_timeout_seconds: int | None = Field(default=None, ge=60, le=7 * 24 * 3600)

    _login_url = field_validator("login_url")(_check_http_url)


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


class IntegrationList(BaseModel):
    data: list[IntegrationOut]


class CredentialsIn(_Strict):
    """Tokens the app already holds (a Salesforce token response, or part of it)."""

    access_token: SecretStr = Field(min_length=1)
    refresh_token: SecretStr | None = None
    instance_url: str = Field(max_length=500)
    id: str | None = Field(default=None, max_length=500)
    issued_at: int | str | None = None

    _instance_url = field_validator("instance_url")(_check_http_url)

    @field_validator("issued_at")
    @classmethod
    def _issued_at_is_epoch_ms(cls, value: int | str | None) -> int | str | None:
        # Salesforce sends issued_at as a string of epoch milliseconds.
        if isinstance(value, str) and not value.isdigit():
            raise ValueError("must be epoch milliseconds (as Salesforce sends it)")
        return value


class ConnectionImport(_Strict):
    """``POST /connections``: import a connection from tokens the app already holds."""

    connection_id: str | None = Field(default=None, pattern=CONNECTION_ID_PATTERN)
    integration: str = Field(min_length=1, max_length=100)
    credentials: CredentialsIn
    metadata: dict[str, Any] = Field(default_factory=dict)


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
    metadata: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ConnectionList(BaseModel):
    data: list[ConnectionOut]
    next_cursor: str | None


def parse_identity_url(url: str | None) -> tuple[str | None, str | None]:
    """``(org_id, user_id)`` from a Salesforce identity URL ``.../id/<org>/<user>``.

    Anything that does not look like one gives ``(None, None)``: the identity URL is a
    hint, and a connection without it is still usable.
    """
    if not url:
        return None, None
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) >= 3 and parts[-3] == "id":
        org, user = parts[-2], parts[-1]
        if _SF_ID.match(org) and _SF_ID.match(user):
            return org, user
    return None, None
