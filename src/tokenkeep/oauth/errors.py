"""Errors of the token endpoint and its neighbours, mapped once at the transport edge.

Two kinds only, because the lifecycle treats them in two different ways:

* :class:`OAuthError`: the provider *answered* and said no (``invalid_grant``,
  ``invalid_client``, a ``403 Bad_OAuth_Token`` on the identity URL, ...). Whether that
  means "revoked" or "an admin must act" is decided by :mod:`tokenkeep.oauth.classify`.
* :class:`UpstreamTransportError`: we got no usable answer (timeout, refused connection,
  TLS failure, a 5xx or 429, a 200 whose body is not the JSON we expect). Always transient:
  it never marks a connection ``needs_reauth``.

Neither ever carries a token: messages are built from the status, the error code and the
provider's description only.
"""

from __future__ import annotations

from typing import Literal

from tokenkeep.errors import ConfigError, TokenkeepError, TransientUpstreamError

__all__ = [
    "IntegrationConfigError",
    "OAuthError",
    "TokenSignatureError",
    "TransportFailureKind",
    "UpstreamTransportError",
]

TransportFailureKind = Literal["timeout", "connection", "http_status", "bad_response"]

# The provider's description is shown to humans and stored in status_reason: keep it short so
# a misbehaving server cannot push a page of HTML (or anything token-shaped) into our logs.
_MAX_DESCRIPTION = 300


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text if len(text) <= _MAX_DESCRIPTION else text[:_MAX_DESCRIPTION] + "..."


class OAuthError(TokenkeepError):
    """The provider rejected an OAuth request (a definite answer, not a transport fault).

    ``status`` is the HTTP status, ``error`` the provider's error word (``invalid_grant``,
    ``invalid_client_id``, ``Bad_OAuth_Token``, ...), ``error_description`` its text.
    """

    code = "upstream_oauth_error"
    status_code = 502

    def __init__(
        self,
        *,
        status: int,
        error: str,
        error_description: str | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.error_description = _clip(error_description)
        self.endpoint = endpoint
        where = f"{endpoint} " if endpoint else ""
        text = f"{where}answered {status} {error}"
        if self.error_description:
            text += f": {self.error_description}"
        super().__init__(
            text,
            details={
                "status": status,
                "error": error,
                "error_description": self.error_description,
            },
        )

    def __repr__(self) -> str:
        return (
            f"OAuthError(status={self.status}, error={self.error!r}, "
            f"error_description={self.error_description!r})"
        )


class TokenSignatureError(OAuthError):
    """A token response's ``signature`` does not match HMAC-SHA256(client_secret, id+issued_at).

    The response is discarded: it was tampered with or did not come from the org we expect.
    """

    code = "invalid_signature"

    def __init__(self, endpoint: str | None = None) -> None:
        super().__init__(
            status=200,
            error="invalid_signature",
            error_description="the token response signature does not verify with the "
            "integration's client secret",
            endpoint=endpoint,
        )


class IntegrationConfigError(OAuthError, ConfigError):
    """The request was never sent: the integration or connection cannot make it.

    Raised BEFORE any network call (``status`` 0), e.g. client credentials on a shared login
    host (``error`` ``invalid_configuration``), a private key that cannot sign
    (``invalid_configuration``), an oauth2 connection without a refresh token
    (``no_refresh_token``). It is an :class:`OAuthError`, so the refresh path classifies it
    like a provider refusal (never retried in a loop), and a :class:`ConfigError` for
    callers validating configuration.
    """

    code = "integration_misconfigured"
    status_code = 422

    def __init__(self, error: str, description: str) -> None:
        super().__init__(status=0, error=error, error_description=description, endpoint="local")


class UpstreamTransportError(TransientUpstreamError):
    """No usable answer from the provider: worth retrying later, never a revocation.

    ``kind`` says what happened; ``status`` is set for ``http_status`` (5xx, 429) and
    ``bad_response``; ``retry_after`` carries a ``Retry-After`` header in seconds if any.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: TransportFailureKind,
        status: int | None = None,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        self.kind = kind
        self.status = status
        self.retry_after = retry_after
        self.endpoint = endpoint
        super().__init__(
            _clip(message) or kind,
            details={"kind": kind, "status": status, "retry_after": retry_after},
        )

    def __repr__(self) -> str:
        return f"UpstreamTransportError(kind={self.kind!r}, status={self.status})"
