"""``POST /connections/{id}/diagnose`` and ``POST /connections/{id}/report``.

Both run :class:`~tokenkeep.diagnosis.service.Diagnoser` and answer the same document: the
cause word, how sure, the evidence in words, the fix, and the connection's status after it
(a verdict that needs an admin or the user sets ``action_required`` / ``needs_reauth`` and
queues the webhook event). ``report`` is for direct-mode clients (the SDK's auth plug-ins
call it): the failed answer they saw, the host they called and the address they called
from (by default the address their request to us came from).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from tokenkeep.api.deps import GatewayDep
from tokenkeep.api.responses import BODY_ERRORS, error_responses
from tokenkeep.api.schemas import CONNECTION_ID_PATTERN
from tokenkeep.diagnosis.classify import Diagnosis
from tokenkeep.store import Connection

__all__ = ["router"]

router = APIRouter(prefix="/connections", tags=["diagnosis"])

IdPath = Annotated[str, Path(pattern=CONNECTION_ID_PATTERN, description="connection id")]


class EvidenceOut(BaseModel):
    """One observation: ``says`` is what an admin reads."""

    name: str
    value: Any
    says: str


class DiagnosisOut(BaseModel):
    """A verdict on a connection."""

    connection_id: str
    cause: str | None = Field(
        description="expired, wrong_instance, ip_locked, api_client_control, revoked, "
        "maintenance, unknown; null when nothing is wrong"
    )
    confidence: str = Field(description="high, medium or low")
    evidence: list[EvidenceOut]
    fix: str
    recovered: bool = Field(description="the connection works now")
    status: str = Field(description="the connection's status after the diagnosis")
    status_reason: str | None
    diagnosed_at: datetime


class ReportIn(BaseModel):
    """What a direct-mode client saw fail."""

    model_config = ConfigDict(extra="forbid")

    status: int = Field(ge=100, le=599, description="the HTTP status Salesforce answered")
    body: str = Field(default="", max_length=16_384, description="the answer's body (head)")
    host: str | None = Field(
        default=None, max_length=500, description="scheme://host[:port] the call went to"
    )
    address: str | None = Field(
        default=None,
        max_length=64,
        description="the client's own IP address (default: the one it reached us from)",
    )
    version: int | None = Field(default=None, ge=0, description="the token version used")


def _out(conn: Connection, diagnosis: Diagnosis, at: datetime) -> DiagnosisOut:
    doc = diagnosis.as_dict()
    return DiagnosisOut(
        connection_id=conn.id,
        status=conn.status,
        status_reason=conn.status_reason,
        diagnosed_at=at,
        **doc,
    )


@router.post(
    "/{connection_id}/diagnose",
    response_model=DiagnosisOut,
    summary="Probe the connection now and name what is wrong",
    responses=error_responses(404, 422),
)
async def diagnose(connection_id: IdPath, gateway: GatewayDep) -> DiagnosisOut:
    """A few Salesforce calls (a data call, and when it fails: introspection, a refresh,
    identity), then the verdict. 404 for an unknown connection."""
    conn, diagnosis = await gateway.diagnoser.diagnose(connection_id)
    conn = await gateway.store.connections.get(conn.id)
    return _out(conn, diagnosis, gateway.clock.now())


@router.post(
    "/{connection_id}/report",
    response_model=DiagnosisOut,
    summary="Report a failed Salesforce answer seen in direct mode",
    responses={**BODY_ERRORS, **error_responses(404)},
)
async def report(
    connection_id: IdPath, body: ReportIn, gateway: GatewayDep, request: Request
) -> DiagnosisOut:
    """The verdict on what the client saw (an IP lock shows here: the token fails from the
    client's address and works from the gateway's). 404 for an unknown connection."""
    address = body.address or (request.client.host if request.client else None)
    conn, diagnosis = await gateway.diagnoser.report(
        connection_id,
        status=body.status,
        body=body.body,
        host=body.host,
        address=address,
        version=body.version,
    )
    conn = await gateway.store.connections.get(conn.id)
    return _out(conn, diagnosis, gateway.clock.now())
