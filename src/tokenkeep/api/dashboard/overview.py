"""``GET /dashboard``: connections by status per integration, orgs in trouble, 24 h chart."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tokenkeep.api.dashboard.chart import CAUSE_COLOURS, activity_chart
from tokenkeep.api.dashboard.render import page
from tokenkeep.api.dashboard.session import ViewerDep
from tokenkeep.api.deps import get_gateway
from tokenkeep.errors import NotFoundError
from tokenkeep.orgs.overview import OrgOverview, show_org
from tokenkeep.vocabulary import CONNECTION_STATUSES

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: Orgs in trouble shown on the overview (the Orgs page lists them all).
_TROUBLE_SHOWN = 20


@router.get("")
async def overview(request: Request, viewer: ViewerDep) -> HTMLResponse:
    """The overview page."""
    gateway = get_gateway(request)
    store = gateway.store
    counts = await store.dashboard.status_counts()
    totals = {s: sum(c.get(s, 0) for c in counts.values()) for s in CONNECTION_STATUSES}
    paused = {s.org_id for s in await store.orgs.paused()}
    spiking = set(await store.orgs.open_spikes())
    trouble: list[OrgOverview] = []
    for org_id in sorted(paused | spiking)[:_TROUBLE_SHOWN]:
        try:
            trouble.append(
                await show_org(
                    store, gateway.settings, gateway.clock, org_id, health=gateway.org_health
                )
            )
        except NotFoundError:  # its last connection went meanwhile
            continue
    await gateway.oplog.flush_all()
    hours = await store.dashboard.hourly_activity(gateway.clock.now())
    seen_causes = sorted({c for h in hours for c in h.causes})
    return await page(
        request,
        "overview.html",
        viewer,
        active="overview",
        title="Overview",
        counts=counts,
        totals=totals,
        statuses=CONNECTION_STATUSES,
        trouble=trouble,
        paused=paused,
        spiking=spiking,
        chart=activity_chart(hours),
        hours=hours,
        calls_total=sum(h.calls for h in hours),
        errors_total=sum(h.session_errors for h in hours),
        cause_totals={c: sum(h.causes.get(c, 0) for h in hours) for c in seen_causes},
        cause_colours=CAUSE_COLOURS,
    )
