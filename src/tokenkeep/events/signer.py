"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

Headers: ``webhook-id`` (the outbox event id, ``evt_...``: the same on every retry, so a
receiver can drop duplicates), ``webhook-timestamp`` (unix seconds at send time) and
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the
base64-decoded part of the ``whsec_...`` secret after the prefix. Signing is the
``standardwebhooks`` package's own; receivers verify with it or with
:func:`tokenkeep.client.verify_webhook`.
"""

from __future__ import annotations

import base64
import secrets

from standardwebhooks import Webhook

from tokenkeep.clock import utc_from_timestamp
from tokenkeep.secret import Secret

__all__ = ["new_webhook_secret", "signed_headers"]


def new_webhook_secret() -> Secret:
    """A fresh ``whsec_`` secret: the base64 of 32 random bytes."""
    return Secret("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii"))


def signed_headers(secret: Secret, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``timestamp``."""
    signature = Webhook(secret.reveal()).sign(
        event_id, utc_from_timestamp(timestamp), body.decode("utf-8")
    )
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }
