"""What the SDK returns: small frozen dataclasses parsed from the gateway's JSON.

Parsing is tolerant of fields the gateway adds later (they are ignored) and strict about
the ones a caller relies on (a missing ``id`` is a bug worth a ``KeyError``). Tokens are
:class:`~tokenkeep.secret.Secret`: ``repr`` and logs show ``***``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from tokenkeep.secret import Secret

__all__ = [
    "ConnectSession",
    "Connection",
    "ConnectionPage",
    "Diagnosis",
    "Integration",
    "LogEntry",
    "Token",
    "parse_connect_session",
    "parse_connection",
    "parse_connection_page",
    "parse_diagnosis",
    "parse_integration",
    "parse_integrations",
    "parse_logs",
    "parse_token",
]


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    # The gateway sends ISO 8601 in UTC ("...Z" or "+00:00"); 3.11 parses both.
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class Integration:
    """An OAuth app configuration; secrets appear only as ``has_*`` flags."""

    key: str
    provider: str
    client_id: str
    login_url: str
    scopes: tuple[str, ...]
    auth_mode: str
    username: str | None
    session_timeout_seconds: int | None
    has_client_secret: bool
    has_private_key: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Connection:
    """One customer connection (never a token: see :meth:`Client.get_token`)."""

    id: str
    integration: str
    status: str
    status_reason: str | None
    org_id: str | None
    user_id: str | None
    username: str | None
    instance_url: str
    has_refresh_token: bool
    refresh_token_fingerprint: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    """One page of ``GET /connections``; pass ``next_cursor`` back for the next page."""

    items: tuple[Connection, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Token:
    """A usable access token (direct mode) and the instance it is valid for.

    ``expires_at`` is the gateway's estimate (``None`` when unknown). ``version`` is the
    stored row version when the gateway reports it.
    """

    access_token: Secret
    instance_url: str
    expires_at: datetime | None = None
    version: int | None = None


@dataclass(frozen=True, slots=True)
class ConnectSession:
    """A hosted connect link: send the user's browser to ``url`` before ``expires_at``."""

    url: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What the gateway concluded about a connection's trouble.

    The answer of ``POST /connections/{id}/diagnose`` and of ``POST /connections/{id}/report``:
    the ``cause`` word (``expired``, ``wrong_instance``, ``ip_locked``,
    ``api_client_control``, ``revoked``, ``maintenance``; ``None`` when nothing is wrong or
    nothing could be told), how sure (``confidence``: ``"high"``, ``"medium"``, ``"low"``),
    the ``evidence`` (``{"name", "value", "says"}`` entries), the ``fix`` to show an admin,
    the connection's ``status`` / ``status_reason`` after the diagnosis, and whether it
    ``recovered`` (the trouble is gone). Fields a gateway does not send stay ``None``/empty.
    """

    cause: str | None
    confidence: float | str | None
    evidence: tuple[Any, ...]
    fix: str | None
    connection_id: str | None = None
    status: str | None = None
    status_reason: str | None = None
    recovered: bool = False
    diagnosed_at: datetime | None = None


class LogEntry(TypedDict, total=False):
    """One operation-log entry (``GET /logs``); never carries a token."""

    id: int
    at: str
    kind: str
    connection_id: str | None
    org_id: str | None
    outcome: str
    cause: str | None
    status_code: int | None
    duration_ms: float | None
    detail: dict[str, Any]


def parse_integration(doc: dict[str, Any]) -> Integration:
    """An :class:`Integration` from the gateway's JSON."""
    return Integration(
        key=doc["key"],
        provider=doc.get("provider", "salesforce"),
        client_id=doc["client_id"],
        login_url=doc["login_url"],
        scopes=tuple(doc.get("scopes") or ()),
        auth_mode=doc.get("auth_mode", "oauth2"),
        username=doc.get("username"),
        session_timeout_seconds=doc.get("session_timeout_seconds"),
        has_client_secret=bool(doc.get("has_client_secret")),
        has_private_key=bool(doc.get("has_private_key")),
        created_at=_when(doc.get("created_at")),
        updated_at=_when(doc.get("updated_at")),
    )


def parse_integrations(doc: dict[str, Any]) -> list[Integration]:
    """``GET /integrations`` → a list."""
    return [parse_integration(item) for item in doc["data"]]


def parse_connection(doc: dict[str, Any]) -> Connection:
    """A :class:`Connection` from the gateway's JSON."""
    return Connection(
        id=doc["id"],
        integration=doc["integration"],
        status=doc["status"],
        status_reason=doc.get("status_reason"),
        org_id=doc.get("org_id"),
        user_id=doc.get("user_id"),
        username=doc.get("username"),
        instance_url=doc["instance_url"],
        has_refresh_token=bool(doc.get("has_refresh_token")),
        refresh_token_fingerprint=doc.get("refresh_token_fingerprint"),
        issued_at=_when(doc.get("issued_at")),
        expires_at=_when(doc.get("expires_at")),
        metadata=dict(doc.get("metadata") or {}),
        created_at=_when(doc.get("created_at")),
        updated_at=_when(doc.get("updated_at")),
    )


def parse_connection_page(doc: dict[str, Any]) -> ConnectionPage:
    """``GET /connections`` → one page."""
    return ConnectionPage(
        items=tuple(parse_connection(item) for item in doc["data"]),
        next_cursor=doc.get("next_cursor"),
    )


def parse_token(doc: dict[str, Any]) -> Token:
    """``GET /connections/{id}/token`` (or a refresh answer carrying a token)."""
    version = doc.get("version")
    return Token(
        access_token=Secret(str(doc["access_token"])),
        instance_url=str(doc["instance_url"]),
        expires_at=_when(doc.get("expires_at")),
        version=int(version) if version is not None else None,
    )


def parse_connect_session(doc: dict[str, Any]) -> ConnectSession:
    """``POST /connect/sessions`` → the link and its expiry."""
    return ConnectSession(url=doc["url"], expires_at=_when(doc.get("expires_at")))


def parse_diagnosis(doc: dict[str, Any]) -> Diagnosis:
    """``POST /connections/{id}/diagnose`` or ``/report`` → :class:`Diagnosis`."""
    return Diagnosis(
        cause=doc.get("cause"),
        confidence=doc.get("confidence"),
        evidence=tuple(doc.get("evidence") or ()),
        fix=doc.get("fix"),
        connection_id=doc.get("connection_id"),
        status=doc.get("status"),
        status_reason=doc.get("status_reason"),
        recovered=bool(doc.get("recovered")),
        diagnosed_at=_when(doc.get("diagnosed_at")),
    )


def parse_logs(doc: Any) -> list[LogEntry]:
    """``GET /logs`` → entries, newest first (a bare list or ``{"data": [...]}``)."""
    items = doc.get("data", []) if isinstance(doc, dict) else doc
    return [LogEntry(**item) for item in items]
