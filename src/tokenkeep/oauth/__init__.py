"""OAuth: the token-endpoint client and flows (authorization code + PKCE, refresh, JWT bearer,
client credentials), and the pure decision around them (failure classification).

Transport (:mod:`.client`, over the aiohttp session of :mod:`.session`) is kept apart from
policy (:mod:`.classify`).
Salesforce's API answers (a data call's 401, maintenance, limits) are read by
:mod:`tokenkeep.providers.salesforce_answers`, below this package.
"""

from tokenkeep.oauth.classify import (
    RefreshFailureDecision,
    backoff_delay,
    classify_refresh_failure,
)
from tokenkeep.oauth.client import TokenEndpointClient
from tokenkeep.oauth.errors import (
    IntegrationConfigError,
    OAuthError,
    TokenSignatureError,
    UpstreamTransportError,
)
from tokenkeep.oauth.jwt_bearer import mint_assertion
from tokenkeep.oauth.models import AuthMode, Identity, Introspection, OAuthApp, TokenResponse
from tokenkeep.oauth.pkce import PkcePair, code_challenge, new_pkce_pair, new_state, state_matches
from tokenkeep.oauth.session import create_session

__all__ = [
    "AuthMode",
    "Identity",
    "IntegrationConfigError",
    "Introspection",
    "OAuthApp",
    "OAuthError",
    "PkcePair",
    "RefreshFailureDecision",
    "TokenEndpointClient",
    "TokenResponse",
    "TokenSignatureError",
    "UpstreamTransportError",
    "backoff_delay",
    "classify_refresh_failure",
    "code_challenge",
    "create_session",
    "mint_assertion",
    "new_pkce_pair",
    "new_state",
    "state_matches",
]
