"""Save an integration (an OAuth app config): the use case behind ``PUT /integrations/{key}``
and ``tokenkeep integrations put``.

Both callers validate the shape of their input first (the control API's request schema);
this module checks what needs the settings (where the login URL may send credentials) and
stores the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenkeep.config import Settings
from tokenkeep.errors import ValidationError
from tokenkeep.oauth.models import DEFAULT_SESSION_TIMEOUT_SECONDS
from tokenkeep.secret import Secret
from tokenkeep.store import Store
from tokenkeep.store.records import Integration
from tokenkeep.store.sentinel import KEEP, Keep
from tokenkeep.urls import upstream_url_problem

__all__ = ["IntegrationSpec", "save_integration"]


@dataclass(frozen=True, slots=True)
class IntegrationSpec:
    """An integration as a caller wants it stored.

    A secret left as :data:`~tokenkeep.store.sentinel.KEEP` keeps the stored value (a PUT
    that changes the scopes need not resend the client secret); ``None`` removes it.
    ``session_timeout_seconds=None`` means Salesforce's default org session timeout.
    """

    client_id: str
    login_url: str
    provider: str = "salesforce"
    client_secret: Secret | Keep | None = KEEP
    scopes: list[str] = field(default_factory=list)
    auth_mode: str = "oauth2"
    private_key: Secret | Keep | None = KEEP
    username: str | None = None
    session_timeout_seconds: int | None = None


async def save_integration(
    store: Store, settings: Settings, key: str, spec: IntegrationSpec
) -> tuple[Integration, bool]:
    """Validate and store an integration; returns it and whether it was created.

    Raises :class:`~tokenkeep.errors.ValidationError` (422) when ``login_url`` may not
    receive credentials (plain http off loopback).
    """
    problem = upstream_url_problem(
        spec.login_url, allow_insecure_loopback=settings.allow_insecure_loopback
    )
    if problem is not None:
        raise ValidationError(f"login_url: {problem}.")
    return await store.integrations.put(
        key,
        provider=spec.provider,
        client_id=spec.client_id,
        client_secret=spec.client_secret,
        login_url=spec.login_url,
        scopes=spec.scopes,
        auth_mode=spec.auth_mode,
        private_key=spec.private_key,
        username=spec.username,
        session_timeout_seconds=spec.session_timeout_seconds or DEFAULT_SESSION_TIMEOUT_SECONDS,
    )
