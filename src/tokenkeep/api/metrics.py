"""``GET /metrics``: Prometheus exposition (no API key, like ``/healthz``: scrapers rarely
carry one; it holds counts only, never an id of a connection, a token or a secret).

Before rendering, the gauges that come from the database are sampled in one short read
(:func:`tokenkeep.store.gauges.sample_gauges`) and the in-process ones (log-queue depth)
are set. The metric set and the multiprocess rules are in
:mod:`tokenkeep.observability.metrics`.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from tokenkeep.api.deps import GatewayDep
from tokenkeep.observability.metrics import CONTENT_TYPE_LATEST
from tokenkeep.store.gauges import sample_gauges

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(gateway: GatewayDep) -> Response:
    """The exposition text (``text/plain; version=0.0.4``)."""
    m = gateway.metrics
    sample = await sample_gauges(gateway.store.db, gateway.clock.now())
    for status in ("active", "needs_reauth", "action_required", "error"):
        m.connections.labels(status).set(sample.connections_by_status.get(status, 0))
    for status, count in sample.connections_by_status.items():
        m.connections.labels(status).set(count)
    m.outbox_pending.set(sample.outbox_pending)
    m.scheduler_due.set(sample.scheduler_due)
    m.orgs_write_paused.set(sample.orgs_write_paused)
    m.orgs_spiking.set(sample.orgs_spiking)
    m.log_queue_depth.set(gateway.oplog.depth)
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
