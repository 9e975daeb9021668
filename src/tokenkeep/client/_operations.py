"""Every control-API call as a value: method, path, parameters, body, and how to read it.

:class:`~tokenkeep.client.Client` and :class:`~tokenkeep.client.AsyncClient` only send an
:class:`Operation` and hand the response to :meth:`Operation.result`; the building and the
parsing live here once (the way httpx shares ``_client.py`` logic between its two clients).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from tokenkeep.client._errors import error_from_response
from tokenkeep.client._models import (
    Connection,
    ConnectionPage,
    ConnectSession,
    Diagnosis,
    Integration,
    LogEntry,
    Token,
    parse_connect_session,
    parse_connection,
    parse_connection_page,
    parse_diagnosis,
    parse_integration,
    parse_integrations,
    parse_logs,
    parse_token,
)
from tokenkeep.secret import Secret

__all__ = ["REPORT_BODY_CHARS", "Operation"]

#: How much of a failed Salesforce answer a report carries (its head is what tells).
REPORT_BODY_CHARS = 2048

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Operation(Generic[T]):
    """One control-API request and the parser of its successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None

    def result(self, response: httpx.Response) -> T:
        """The parsed answer, or the typed error the gateway's error body names."""
        if response.status_code >= 400:
            raise error_from_response(response)
        return self.parse(response)


def _seg(value: str) -> str:
    # Ids and keys are URL-safe by the gateway's own patterns; quoting keeps a typo from
    # turning into another route.
    return quote(value, safe="")


def _reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _nothing(_response: httpx.Response) -> None:
    return None


def put_integration(
    key: str,
    *,
    client_id: str,
    client_secret: str | Secret | None,
    login_url: str | None,
    scopes: list[str] | None,
    auth_mode: str | None,
    private_key: str | Secret | None,
    username: str | None,
    session_timeout_seconds: int | None,
    provider: str | None,
) -> Operation[tuple[Integration, bool]]:
    """``PUT /integrations/{key}`` → ``(integration, created)``."""
    body = _drop_none(
        {
            "provider": provider,
            "client_id": client_id,
            "client_secret": _reveal(client_secret) if client_secret is not None else None,
            "login_url": login_url,
            "scopes": scopes,
            "auth_mode": auth_mode,
            "private_key": _reveal(private_key) if private_key is not None else None,
            "username": username,
            "session_timeout_seconds": session_timeout_seconds,
        }
    )
    return Operation(
        "PUT",
        f"/integrations/{_seg(key)}",
        lambda r: (parse_integration(r.json()), r.status_code == 201),
        json=body,
    )


def get_integration(key: str) -> Operation[Integration]:
    """``GET /integrations/{key}``."""
    return Operation("GET", f"/integrations/{_seg(key)}", lambda r: parse_integration(r.json()))


def list_integrations() -> Operation[list[Integration]]:
    """``GET /integrations``."""
    return Operation("GET", "/integrations", lambda r: parse_integrations(r.json()))


def delete_integration(key: str) -> Operation[None]:
    """``DELETE /integrations/{key}`` (409 while connections use it)."""
    return Operation("DELETE", f"/integrations/{_seg(key)}", _nothing)


def import_connection(
    integration: str,
    *,
    access_token: str | Secret,
    instance_url: str,
    refresh_token: str | Secret | None,
    connection_id: str | None,
    id_url: str | None,
    issued_at: int | str | None,
    metadata: Mapping[str, Any] | None,
) -> Operation[Connection]:
    """``POST /connections`` (import tokens the app already holds)."""
    credentials = _drop_none(
        {
            "access_token": _reveal(access_token),
            "refresh_token": _reveal(refresh_token) if refresh_token is not None else None,
            "instance_url": instance_url,
            "id": id_url,
            "issued_at": issued_at,
        }
    )
    body = _drop_none(
        {
            "connection_id": connection_id,
            "integration": integration,
            "credentials": credentials,
            "metadata": dict(metadata) if metadata is not None else None,
        }
    )
    return Operation("POST", "/connections", lambda r: parse_connection(r.json()), json=body)


def list_connections(
    *,
    integration: str | None,
    status: str | None,
    org_id: str | None,
    limit: int | None,
    cursor: str | None,
) -> Operation[ConnectionPage]:
    """``GET /connections`` (one page)."""
    params = _drop_none(
        {
            "integration": integration,
            "status": status,
            "org_id": org_id,
            "limit": limit,
            "cursor": cursor,
        }
    )
    return Operation(
        "GET", "/connections", lambda r: parse_connection_page(r.json()), params=params
    )


def get_connection(connection_id: str) -> Operation[Connection]:
    """``GET /connections/{id}``."""
    return Operation(
        "GET", f"/connections/{_seg(connection_id)}", lambda r: parse_connection(r.json())
    )


def delete_connection(connection_id: str, *, revoke: bool) -> Operation[None]:
    """``DELETE /connections/{id}`` (``?revoke=true`` also revokes upstream)."""
    params = {"revoke": "true"} if revoke else {}
    return Operation("DELETE", f"/connections/{_seg(connection_id)}", _nothing, params=params)


def refresh_connection(
    connection_id: str, *, rejected_version: int | None
) -> Operation[Token | None]:
    """``POST /connections/{id}/refresh`` → the new token when the answer carries one."""

    def parse(response: httpx.Response) -> Token | None:
        try:
            doc = response.json()
        except ValueError:
            return None
        if isinstance(doc, dict) and "access_token" in doc and "instance_url" in doc:
            return parse_token(doc)
        return None

    body = {"rejected_version": rejected_version} if rejected_version is not None else None
    return Operation("POST", f"/connections/{_seg(connection_id)}/refresh", parse, json=body)


def get_token(connection_id: str, *, min_ttl: float | None) -> Operation[Token]:
    """``GET /connections/{id}/token`` (direct mode)."""
    return Operation(
        "GET",
        f"/connections/{_seg(connection_id)}/token",
        lambda r: parse_token(r.json()),
        params=_drop_none({"min_ttl": min_ttl}),
    )


def create_connect_session(
    integration: str,
    *,
    connection_id: str | None,
    metadata: Mapping[str, Any] | None,
    return_url: str | None,
) -> Operation[ConnectSession]:
    """``POST /connect/sessions`` → a single-use connect link."""
    body = _drop_none(
        {
            "integration": integration,
            "connection_id": connection_id,
            "metadata": dict(metadata) if metadata is not None else None,
            "return_url": return_url,
        }
    )
    return Operation(
        "POST", "/connect/sessions", lambda r: parse_connect_session(r.json()), json=body
    )


def diagnose(connection_id: str) -> Operation[Diagnosis]:
    """``POST /connections/{id}/diagnose``."""
    return Operation(
        "POST",
        f"/connections/{_seg(connection_id)}/diagnose",
        lambda r: parse_diagnosis(r.json()),
    )


def report(
    connection_id: str,
    *,
    status: int,
    body: str | bytes,
    host: str,
    address: str | None,
    version: int | None,
) -> Operation[Diagnosis]:
    """``POST /connections/{id}/report``: the failed answer a direct-mode call got."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    doc = _drop_none(
        {
            "status": status,
            "body": text[:REPORT_BODY_CHARS],
            "host": host,
            "address": address,
            "version": version,
        }
    )
    return Operation(
        "POST",
        f"/connections/{_seg(connection_id)}/report",
        lambda r: parse_diagnosis(r.json()),
        json=doc,
    )


def logs(
    *,
    connection_id: str | None,
    org_id: str | None,
    kind: str | None,
    since: datetime | str | None,
    limit: int | None,
    cause: str | None = None,
    status: int | str | None = None,
    until: datetime | str | None = None,
) -> Operation[list[LogEntry]]:
    """``GET /logs`` (newest first)."""
    params = _drop_none(
        {
            "connection_id": connection_id,
            "org_id": org_id,
            "kind": kind,
            "cause": cause,
            "status": str(status) if status is not None else None,
            "since": since.isoformat() if isinstance(since, datetime) else since,
            "until": until.isoformat() if isinstance(until, datetime) else until,
            "limit": limit,
        }
    )
    return Operation("GET", "/logs", lambda r: parse_logs(r.json()), params=params)
