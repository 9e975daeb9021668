"""Why a provider answer could not be used: raised by the provider parsers.

The parsers see only decoded values, never the request that produced them, so these errors
say what is wrong with the answer and nothing about transport. The token-endpoint client
(:mod:`tokenkeep.oauth.client`) maps them once, at its edge, to the OAuth layer's errors
(:class:`~tokenkeep.oauth.errors.TokenSignatureError`,
:class:`~tokenkeep.oauth.errors.UpstreamTransportError`). Neither carries a token.
"""

from __future__ import annotations

from tokenkeep.errors import TokenkeepError

__all__ = ["MalformedAnswerError", "ProviderAnswerError", "SignatureMismatchError"]


class ProviderAnswerError(TokenkeepError):
    """A provider answered 2xx with something we cannot use.

    ``status`` is the answer's HTTP status; ``endpoint`` names the endpoint when the caller
    told the parser (``token``), else None.
    """

    code = "bad_response"
    status_code = 502

    def __init__(self, message: str, *, status: int = 200, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint


class MalformedAnswerError(ProviderAnswerError):
    """The answer lacks a field it must have (``access_token``, ``organization_id``, ...)."""


class SignatureMismatchError(ProviderAnswerError):
    """A token answer's ``signature`` does not verify with the app's client secret."""

    code = "invalid_signature"

    def __init__(self, endpoint: str | None = None) -> None:
        super().__init__(
            "the token response signature does not verify with the integration's client secret",
            endpoint=endpoint,
        )
