"""Response models of ``GET /orgs`` and ``GET /orgs/{org_id}`` (org health)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from tokenkeep.orgs.overview import OrgOverview

__all__ = ["OrgList", "OrgOut", "org_out"]


class ConnectionsByStatus(BaseModel):
    active: int
    needs_reauth: int
    action_required: int
    error: int


class WritePauseOut(BaseModel):
    paused: bool
    since: datetime | None
    retry_after: int | None  # seconds until the next probe may run


class ErrorRatesOut(BaseModel):
    window_seconds: int
    calls: int
    session_errors: int
    ratio: float
    by_cause: dict[str, int]


class CauseSeenOut(BaseModel):
    cause: str
    calls: int
    last_seen: datetime


class SpikeOut(BaseModel):
    open: bool
    since: datetime | None


class ApiUsageOut(BaseModel):
    used: int
    max: int


class LimitInfoOut(BaseModel):
    raw: str
    api_usage: ApiUsageOut | None
    seen_at: datetime | None


class SessionTimeoutOut(BaseModel):
    seconds: int | None
    learned_at: datetime | None
    samples: int


class OrgOut(BaseModel):
    org_id: str
    connections: ConnectionsByStatus
    write_pause: WritePauseOut
    error_rates: ErrorRatesOut
    recent_causes: list[CauseSeenOut]
    spike: SpikeOut
    limit_info: LimitInfoOut | None
    session_timeout: SessionTimeoutOut


class OrgList(BaseModel):
    data: list[OrgOut]
    next_cursor: str | None


def org_out(org: OrgOverview) -> OrgOut:
    """The API view of an org's health."""
    state, window = org.state, org.window
    limit = None
    if state.last_limit_info:
        usage = org.api_usage
        limit = LimitInfoOut(
            raw=state.last_limit_info,
            api_usage=ApiUsageOut(used=usage[0], max=usage[1]) if usage else None,
            seen_at=state.last_limit_info_at,
        )
    return OrgOut(
        org_id=org.org_id,
        connections=ConnectionsByStatus.model_validate(org.connections),
        write_pause=WritePauseOut(
            paused=state.paused, since=state.pause_started_at, retry_after=org.retry_after
        ),
        error_rates=ErrorRatesOut(
            window_seconds=org.window_seconds,
            calls=window.calls,
            session_errors=window.session_errors,
            ratio=round(window.ratio, 4),
            by_cause=dict(window.causes),
        ),
        recent_causes=[
            CauseSeenOut(cause=c.cause, calls=c.calls, last_seen=c.last_seen)
            for c in org.recent_causes
        ],
        spike=SpikeOut(open=state.spike_started_at is not None, since=state.spike_started_at),
        limit_info=limit,
        session_timeout=SessionTimeoutOut(
            seconds=state.session_timeout_estimate_seconds,
            learned_at=state.session_timeout_learned_at,
            samples=state.session_timeout_samples,
        ),
    )
