"""What a webhook body says: ``{"type", "timestamp", "data"}``, the same for every event.

``data`` is the outbox payload, whose standard keys (``connection_id``, ``integration``,
``org_id``, ``status``, ``reason``, ``fix``) the store fills when the event is written
(:func:`tokenkeep.store.operations.standard_payload`); here ``fix`` gets the diagnosis's
words for the reason's cause when the writer gave none. Any key that names a token, secret
or password is dropped: writers never put one there, and this keeps it so.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from tokenkeep.diagnosis.words import FIXES
from tokenkeep.store.operations import STANDARD_KEYS
from tokenkeep.vocabulary import Reason

__all__ = ["envelope", "envelope_body", "event_data", "iso_utc"]

_SECRET_WORDS = ("token", "secret", "password", "assertion", "private_key")


def iso_utc(when: datetime) -> str:
    """``2026-01-01T00:00:00.123456Z``: ISO-8601 in UTC."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _clean(v)
            for k, v in value.items()
            if not any(word in str(k).lower() for word in _SECRET_WORDS)
        }
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def event_data(payload: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of an event: its payload, secret-free, with every standard key."""
    data = _clean(dict(payload))
    for key in STANDARD_KEYS:
        data.setdefault(key, None)
    if data["fix"] is None:
        reason = Reason.parse(data.get("reason"))
        cause = reason.cause if reason is not None else None
        if cause is not None:
            data["fix"] = FIXES[cause]
    return dict(data)


def envelope(event_type: str, created_at: datetime, payload: dict[str, Any]) -> dict[str, Any]:
    """The webhook body as a dict."""
    return {"type": event_type, "timestamp": iso_utc(created_at), "data": event_data(payload)}


def envelope_body(event_type: str, created_at: datetime, payload: dict[str, Any]) -> bytes:
    """The webhook body bytes (compact JSON, UTF-8): the same bytes on every retry."""
    return json.dumps(
        envelope(event_type, created_at, payload), separators=(",", ":"), default=str
    ).encode("utf-8")
