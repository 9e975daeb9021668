"""What ``GET /orgs`` / ``GET /orgs/{org_id}`` and ``tokenkeep orgs`` report about an org.

One read model for the API and the CLI: connections by status (``connections``), the
shared write pause and spike (``org_state``), the error rates over the spike window and
the causes of the last hour (``org_call_counts``, plus the asking gateway's unflushed
counts when an :class:`~tokenkeep.orgs.health.OrgHealth` is given), the last
``Sforce-Limit-Info`` and the learned session timeout.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from datetime import datetime

from tokenkeep.clock import Clock, utc_from_timestamp
from tokenkeep.config import Settings
from tokenkeep.errors import NotFoundError, ValidationError
from tokenkeep.orgs.health import OrgHealth
from tokenkeep.orgs.windows import Counts, window_since
from tokenkeep.providers.salesforce import parse_limit_info
from tokenkeep.store import Store
from tokenkeep.store.records import OrgState
from tokenkeep.vocabulary import CONNECTION_STATUSES

__all__ = ["CauseSeen", "OrgOverview", "list_orgs", "show_org"]

#: How far back ``recent_causes`` looks.
RECENT_CAUSES_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class CauseSeen:
    """A cause word seen in the org's recent calls: how often, and the last bucket."""

    cause: str
    calls: int
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class OrgOverview:
    """The health of one org (see the module docstring)."""

    org_id: str
    connections: dict[str, int]
    state: OrgState
    retry_after: int | None
    window_seconds: int
    window: Counts
    recent_causes: list[CauseSeen]
    api_usage: tuple[int, int] | None


def _cursor(org_id: str) -> str:
    return base64.urlsafe_b64encode(org_id.encode()).decode().rstrip("=")


def _after(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationError("cursor is not a cursor returned by this API") from None


async def list_orgs(
    store: Store,
    settings: Settings,
    clock: Clock,
    *,
    integration: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    health: OrgHealth | None = None,
) -> tuple[list[OrgOverview], str | None]:
    """Orgs with connections, by org id; ``(page, next_cursor)``."""
    groups = await store.orgs.connections_by_org(
        integration=integration, after=_after(cursor), limit=limit + 1
    )
    more = len(groups) > limit
    groups = groups[:limit]
    connections = {g.org_id: g.by_status for g in groups}
    page = await _overviews(
        store, settings, clock, connections, integration=integration, health=health
    )
    next_cursor = _cursor(groups[-1].org_id) if more and groups else None
    return page, next_cursor


async def show_org(
    store: Store,
    settings: Settings,
    clock: Clock,
    org_id: str,
    *,
    health: OrgHealth | None = None,
) -> OrgOverview:
    """One org; ``NotFoundError`` when it has no connection and no recorded state."""
    groups = await store.orgs.connections_by_org(org_id=org_id, limit=1)
    if not groups and await store.orgs.get(org_id) is None:
        raise NotFoundError(f"No org {org_id!r} is known to tokenkeep.")
    connections = {org_id: groups[0].by_status if groups else {}}
    return (await _overviews(store, settings, clock, connections, health=health))[0]


async def _overviews(
    store: Store,
    settings: Settings,
    clock: Clock,
    connections: dict[str, dict[str, int]],
    *,
    integration: str | None = None,
    health: OrgHealth | None = None,
) -> list[OrgOverview]:
    org_ids = list(connections)
    window_seconds = settings.spike_window_seconds
    bucket = settings.org_health_bucket_seconds
    now = clock.time()
    states = await store.orgs.states(org_ids)
    recent = await store.org_counts.since(
        utc_from_timestamp(window_since(now, RECENT_CAUSES_SECONDS, bucket)),
        org_ids=org_ids,
        integration=integration,
    )
    if health is not None:
        windows = await health.windows(org_ids, seconds=window_seconds, integration=integration)
    else:
        since = window_since(now, window_seconds, bucket)
        windows = {org: Counts() for org in org_ids}
        for b in recent:
            if b.bucket_start.timestamp() >= since:
                windows[b.org_id] = windows[b.org_id] + Counts(b.calls, b.session_errors, b.causes)
    causes: dict[str, dict[str, tuple[int, datetime]]] = {org: {} for org in org_ids}
    for b in recent:
        for cause, n in b.causes.items():
            calls, last = causes[b.org_id].get(cause, (0, b.bucket_start))
            causes[b.org_id][cause] = (calls + n, max(last, b.bucket_start))
    result = []
    for org in org_ids:
        state = states.get(org) or OrgState(org_id=org)
        retry_after = None
        if state.paused and state.writes_paused_until is not None:
            retry_after = max(1, math.ceil(state.writes_paused_until.timestamp() - now))
        result.append(
            OrgOverview(
                org_id=org,
                connections={s: connections[org].get(s, 0) for s in CONNECTION_STATUSES},
                state=state,
                retry_after=retry_after,
                window_seconds=window_seconds,
                window=windows[org],
                recent_causes=sorted(
                    (CauseSeen(c, n, last) for c, (n, last) in causes[org].items()),
                    key=lambda seen: (-seen.calls, seen.cause),
                ),
                api_usage=parse_limit_info(state.last_limit_info)
                if state.last_limit_info
                else None,
            )
        )
    return result
