"""Verify a tokenkeep webhook on the receiving side (Standard Webhooks signatures)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from tokenkeep.clock import Clock, SystemClock

__all__ = ["WebhookVerificationError", "verify_webhook"]

_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh tokenkeep webhook (the message says why).

    Answer such a request with a 4xx and do not act on its body.
    """


def _key(secret: str) -> bytes:
    try:
        key = base64.b64decode(secret.removeprefix(_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError(
            "the webhook secret is not a whsec_<base64> secret"
        ) from None
    if not key:
        raise WebhookVerificationError("the webhook secret is empty")
    return key


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    *,
    tolerance_seconds: float = 300,
    clock: Clock | None = None,
) -> dict[str, Any]:
    """Check a webhook's signature and age; return the parsed event.

    ``headers`` are the request's headers (any case), ``body`` its raw bytes (not re-encoded
    JSON: the signature covers the exact bytes), ``secret`` the endpoint's ``whsec_...``.
    A ``webhook-timestamp`` more than ``tolerance_seconds`` away from now is refused, so a
    captured request cannot be replayed later. Raises :class:`WebhookVerificationError`.

    Returns ``{"type", "timestamp", "data"}``; ``headers["webhook-id"]`` is the event id,
    the same on every retry (drop duplicates by it: delivery is at least once).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not unix seconds") from None
    now = (clock or SystemClock()).time()
    if abs(now - sent_at) > tolerance_seconds:
        raise WebhookVerificationError(
            f"webhook-timestamp is {abs(now - sent_at):.0f} s away from now "
            f"(more than {tolerance_seconds:g} s): a stale or replayed request"
        )
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    signed = msg_id.encode("utf-8") + b"." + timestamp.encode("ascii") + b"." + raw
    expected = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            try:
                event: dict[str, Any] = json.loads(raw)
            except ValueError:
                raise WebhookVerificationError("the body is not JSON") from None
            return event
    raise WebhookVerificationError("no webhook-signature matches the body and the secret")
