"""What is genuinely Salesforce-specific: the shape of its token, identity, introspection
and error answers, and the token response ``signature``.

Pure parsing over already-decoded values; no I/O. Quirks handled here, with their evidence
(shared/SALESFORCE.md):

* no ``expires_in``; ``issued_at`` is a STRING of epoch milliseconds;
* the ``id`` URL ``.../id/<org id>/<user id>`` is the only place the token answer names the
  org and user (18-character ids);
* ``signature`` = base64(HMAC-SHA256(key=client_secret, msg=id + issued_at));
* REST errors are a JSON *array* of ``{"message", "errorCode"[, "fields"]}`` in any key
  order, but a few answers are plain text (``Bad_OAuth_Token``) or HTML.

What a data call's answer *means* (a dead session, maintenance, a limit) is read by
:mod:`tokenkeep.providers.salesforce_answers`. An answer that cannot be used raises
:mod:`tokenkeep.providers.errors`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tokenkeep.providers.errors import MalformedAnswerError, SignatureMismatchError
from tokenkeep.providers.models import Identity, Introspection, TokenResponse
from tokenkeep.secret import Secret

__all__ = [
    "SECRET_TOKEN_FIELDS",
    "RestError",
    "compute_signature",
    "normalize_id",
    "parse_id_url",
    "parse_identity",
    "parse_introspection",
    "parse_limit_info",
    "parse_oauth_error",
    "parse_rest_errors",
    "parse_token_response",
    "verify_signature",
]

# Fields of a token answer that are credentials: never copied into ``raw``.
SECRET_TOKEN_FIELDS = frozenset({"access_token", "refresh_token", "id_token", "signature"})

_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def normalize_id(sf_id: str) -> str:
    """The 18-character, case-insensitive form of a 15- or 18-character Salesforce id.

    The 3-character suffix encodes, 5 characters at a time, which letters are upper case
    (the documented algorithm), so the 18-character form is safe to compare ignoring case.
    """
    if not _ID_RE.match(sf_id):
        raise ValueError("not a Salesforce id")
    if len(sf_id) == 18:
        return sf_id
    suffix = ""
    for chunk in range(3):
        bits = 0
        for pos in range(5):
            ch = sf_id[chunk * 5 + pos]
            if "A" <= ch <= "Z":
                bits |= 1 << pos
        suffix += _CHECKSUM_ALPHABET[bits]
    return sf_id + suffix


def parse_id_url(id_url: str) -> tuple[str, str] | None:
    """``(org_id, user_id)`` (18 characters each) from an identity URL, or None.

    Accepts any host (login, test, My Domain, the emulator): only the ``/id/<org>/<user>``
    tail of the path matters.
    """
    parts = [p for p in urlsplit(id_url).path.split("/") if p]
    if len(parts) < 3 or parts[-3] != "id":
        return None
    try:
        return normalize_id(parts[-2]), normalize_id(parts[-1])
    except ValueError:
        return None


def compute_signature(client_secret: str, id_url: str, issued_at: str) -> str:
    """base64(HMAC-SHA256(key=client_secret, msg=id + issued_at)), as Salesforce sends it."""
    digest = hmac.new(
        client_secret.encode(), (id_url + issued_at).encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def verify_signature(client_secret: str, id_url: str, issued_at: str, signature: str) -> bool:
    """True when ``signature`` matches; constant-time comparison."""
    expected = compute_signature(client_secret, id_url, issued_at)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # JSON may say 1e999 (inf) or NaN: int() of those raises, and no time is infinite.
        return int(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def parse_token_response(
    body: Mapping[str, Any],
    *,
    received_at: float,
    client_secret: Secret | None = None,
    local_address: str | None = None,
    endpoint: str | None = None,
    strict_signature: bool = True,
) -> TokenResponse:
    """A :class:`TokenResponse` from a 200 token-endpoint body.

    With ``client_secret`` and a ``signature`` in the body, the signature is checked. A
    mismatch raises :class:`~tokenkeep.providers.errors.SignatureMismatchError` when
    ``strict_signature`` (the connect flow's code exchange: the signature binds the identity
    we are about to store); else the tokens are returned with ``signature_mismatch=True``.
    A refresh answer must never be thrown away for it: TLS already authenticated the token
    endpoint, the answer may carry a rotated refresh token (the old one is dead), and a
    mismatch there almost always means the stored client secret is wrong -- a configuration
    problem to report, not a reason to lose the connection. A body without ``access_token``
    or ``instance_url`` is a broken answer
    (:class:`~tokenkeep.providers.errors.MalformedAnswerError`).
    """
    access_token = _opt_str(body.get("access_token"))
    instance_url = _opt_str(body.get("instance_url"))
    if access_token is None or instance_url is None:
        raise MalformedAnswerError(
            "token endpoint answered 200 without access_token or instance_url",
            endpoint=endpoint,
        )
    id_url = _opt_str(body.get("id"))
    ids = parse_id_url(id_url) if id_url else None
    # issued_at is a string of epoch MILLISECONDS; keep the original string for the HMAC,
    # because re-formatting an int could differ (leading zeros, "1.5e12").
    issued_at_raw = body.get("issued_at")
    issued_at_text = str(issued_at_raw) if issued_at_raw is not None else None
    signature = _opt_str(body.get("signature"))
    verified = mismatch = False
    if signature and client_secret and id_url and issued_at_text is not None:
        verified = verify_signature(client_secret.reveal(), id_url, issued_at_text, signature)
        if not verified and strict_signature:
            raise SignatureMismatchError(endpoint)
        mismatch = not verified
    refresh = _opt_str(body.get("refresh_token"))
    return TokenResponse(
        access_token=Secret(access_token),
        refresh_token=Secret(refresh) if refresh else None,
        instance_url=instance_url.rstrip("/"),
        id_url=id_url,
        org_id=ids[0] if ids else None,
        user_id=ids[1] if ids else None,
        issued_at_ms=_opt_int(issued_at_raw),
        signature=signature,
        signature_verified=verified,
        signature_mismatch=mismatch,
        scope=_opt_str(body.get("scope")),
        token_type=_opt_str(body.get("token_type")) or "Bearer",
        received_at=received_at,
        local_address=local_address,
        raw={k: v for k, v in body.items() if k not in SECRET_TOKEN_FIELDS},
    )


def parse_introspection(body: Mapping[str, Any]) -> Introspection:
    """An :class:`Introspection` from ``/services/oauth2/introspect`` (times in seconds)."""
    return Introspection(
        active=body.get("active") is True,
        exp=_opt_int(body.get("exp")),
        iat=_opt_int(body.get("iat")),
        nbf=_opt_int(body.get("nbf")),
        scope=_opt_str(body.get("scope")),
        client_id=_opt_str(body.get("client_id")),
        username=_opt_str(body.get("username")),
        sub=_opt_str(body.get("sub")),
        token_type=_opt_str(body.get("token_type")),
    )


def parse_identity(body: Mapping[str, Any], *, id_url: str | None = None) -> Identity:
    """An :class:`Identity` from the identity URL or ``/services/oauth2/userinfo``.

    The identity URL says ``user_id``/``organization_id``/``username``/``display_name``;
    userinfo (OpenID) says ``user_id``/``organization_id``/``preferred_username``/``name``.
    If the ids are missing the identity URL itself supplies them.
    """
    user_id = _opt_str(body.get("user_id"))
    org_id = _opt_str(body.get("organization_id"))
    if (user_id is None or org_id is None) and id_url:
        ids = parse_id_url(id_url)
        if ids:
            org_id, user_id = org_id or ids[0], user_id or ids[1]
    if user_id is None or org_id is None:
        raise MalformedAnswerError("identity answer names no user_id/organization_id")
    urls = body.get("urls")
    active = body.get("active")
    return Identity(
        user_id=normalize_id(user_id) if _ID_RE.match(user_id) else user_id,
        org_id=normalize_id(org_id) if _ID_RE.match(org_id) else org_id,
        username=_opt_str(body.get("username")) or _opt_str(body.get("preferred_username")),
        email=_opt_str(body.get("email")),
        display_name=_opt_str(body.get("display_name")) or _opt_str(body.get("name")),
        active=active if isinstance(active, bool) else None,
        user_type=_opt_str(body.get("user_type")),
        urls={str(k): str(v) for k, v in urls.items()} if isinstance(urls, Mapping) else {},
        raw=dict(body),
    )


def parse_oauth_error(status: int, body: bytes) -> tuple[str, str | None]:
    """``(error, error_description)`` from a non-2xx ``/services/oauth2/*`` answer.

    JSON ``{"error", "error_description"}`` is the norm; the identity URL and userinfo answer
    the plain text ``Bad_OAuth_Token``; anything else becomes ``http_<status>``.
    """
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"].strip():
            desc = data.get("error_description")
            return data["error"].strip(), desc if isinstance(desc, str) else None
    if text.startswith("["):
        errors = parse_rest_errors(body)
        if errors and errors[0].error_code:
            return errors[0].error_code, errors[0].message
    # A short single word (e.g. Bad_OAuth_Token) is the error itself; never echo long bodies.
    if text and len(text) <= 64 and re.fullmatch(r"[A-Za-z_]+", text):
        return text, None
    return f"http_{status}", None


@dataclass(frozen=True, slots=True)
class RestError:
    """One entry of a REST error array."""

    error_code: str
    message: str
    fields: tuple[str, ...] = ()


def parse_rest_errors(body: bytes) -> list[RestError]:
    """The entries of a REST error array; ``[]`` for anything that is not one.

    Defensive by design: key order varies, a single object (not an array) is accepted, and
    non-JSON (HTML error pages, plain text) yields ``[]`` instead of raising.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return []
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return []
    out: list[RestError] = []
    for item in data:
        if not isinstance(item, dict):
            continue
        code = item.get("errorCode")
        if not isinstance(code, str):
            continue
        message = item.get("message")
        fields = item.get("fields")
        out.append(
            RestError(
                error_code=code,
                message=message if isinstance(message, str) else "",
                fields=tuple(str(f) for f in fields) if isinstance(fields, list) else (),
            )
        )
    return out


# At most 18 digits: int() of a longer run is slow or refused (Python's 4300-digit limit),
# and no real usage or limit is anywhere near 10**18.
_API_USAGE_RE = re.compile(r"(?:^|[;,\s])api-usage=(\d{1,18})/(\d{1,18})(?!\d)")


def parse_limit_info(value: str) -> tuple[int, int] | None:
    """The org's daily API usage ``(used, max)`` from a ``Sforce-Limit-Info`` header
    (``api-usage=18/15000``, possibly followed by ``; per-app-api-usage=...``), or None."""
    match = _API_USAGE_RE.search(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))
