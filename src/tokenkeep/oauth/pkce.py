"""PKCE (RFC 7636, method S256) and the ``state`` parameter of the connect flow."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

__all__ = ["PkcePair", "code_challenge", "new_pkce_pair", "new_state", "state_matches"]

# RFC 7636 §4.1: 43..128 characters from the unreserved set.
_VERIFIER_BYTES = 64  # -> 86 base64url characters


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def code_challenge(code_verifier: str) -> str:
    """The S256 challenge: base64url(SHA-256(verifier)) without padding."""
    return _b64url(hashlib.sha256(code_verifier.encode("ascii")).digest())


@dataclass(frozen=True, slots=True)
class PkcePair:
    """A fresh verifier (kept server-side, secret) and its S256 challenge (sent to the user)."""

    code_verifier: str = field(repr=False)
    code_challenge: str
    method: str = "S256"


def new_pkce_pair() -> PkcePair:
    """A new random verifier and its challenge."""
    verifier = _b64url(secrets.token_bytes(_VERIFIER_BYTES))
    return PkcePair(code_verifier=verifier, code_challenge=code_challenge(verifier))


def new_state() -> str:
    """An unguessable ``state`` value (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def state_matches(expected: str, received: str | None) -> bool:
    """Constant-time comparison of the stored and the returned ``state``."""
    if not received:
        return False
    return hmac.compare_digest(expected.encode(), received.encode("utf-8", "replace"))
