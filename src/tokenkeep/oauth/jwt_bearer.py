"""The RS256 assertion of the JWT bearer grant (``urn:ietf:params:oauth:grant-type:jwt-bearer``).

Claims (Salesforce): ``iss`` = consumer key, ``sub`` = username, ``aud`` = the login host
(production or sandbox, never a My Domain; see ``Provider.jwt_audience``), ``exp`` at most
3 minutes ahead. ``exp`` comes from the injected clock, so a test that advances the
emulator's clock can mint assertions the emulator accepts.
"""

from __future__ import annotations

import jwt

from tokenkeep.clock import Clock
from tokenkeep.oauth.errors import IntegrationConfigError
from tokenkeep.oauth.models import OAuthApp
from tokenkeep.providers.catalog import get_provider
from tokenkeep.secret import Secret

__all__ = ["MAX_ASSERTION_LIFETIME", "mint_assertion"]

# Salesforce rejects assertions whose exp is more than 3 minutes away.
MAX_ASSERTION_LIFETIME = 180


def mint_assertion(
    app: OAuthApp, *, clock: Clock, lifetime: int = MAX_ASSERTION_LIFETIME
) -> Secret:
    """A signed assertion for ``app`` (which needs ``private_key`` and ``username``)."""
    if not app.private_key or not app.username:
        raise IntegrationConfigError(
            "invalid_configuration", "JWT bearer needs the integration's private_key and username"
        )
    lifetime = max(1, min(int(lifetime), MAX_ASSERTION_LIFETIME))
    claims = {
        "iss": app.client_id,
        "sub": app.username,
        "aud": get_provider(app.provider).jwt_audience(app.login_url),
        "exp": int(clock.time()) + lifetime,
    }
    try:
        token = jwt.encode(claims, app.private_key.reveal(), algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        # Never include the key or its parse error details (they can quote the PEM).
        raise IntegrationConfigError(
            "invalid_configuration",
            f"the integration's private_key cannot sign RS256 ({type(exc).__name__})",
        ) from None
    return Secret(token)
