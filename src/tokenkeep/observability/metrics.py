"""Prometheus metrics (prometheus-client): what ``GET /metrics`` shows.

One :class:`Metrics` per gateway process, built with its own ``CollectorRegistry`` (so the
many gateways a test process starts never share counters). Labels are bounded: status
class, cause word, refresh result, connection status — never a connection id, and an org id
only with ``TOKENKEEP_METRICS_ORG_LABEL=1`` (the ``org_id`` label is then on the proxied
request counter; without the setting that label does not exist).

Several worker processes (``tokenkeep serve --workers N``): prometheus-client's
multiprocess mode. ``serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory under
the data dir before it spawns the workers; each worker's values then live in memory-mapped
files there, and a scrape answered by any worker aggregates every worker's files
(``MultiProcessCollector``): counters and histograms are summed; live gauges (single-flight
waiters, log-queue depth) are summed over live processes; gauges read from the database
(connections by status, outbox depth, scheduler backlog) report the most recent sample.
A worker marks itself dead on shutdown so its live gauges drop out.

The gauges that come from the database are sampled when ``/metrics`` is scraped
(:func:`tokenkeep.api.metrics`), not by a background loop.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["CONTENT_TYPE_LATEST", "MULTIPROC_ENV", "Metrics", "multiprocess_dir", "status_class"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Upstream answers are mostly tens of milliseconds; token calls hundreds.
_CHILD_CACHE_MAX = 4096
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess_dir() -> Path | None:
    """The multiprocess directory when this process runs in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def status_class(status: int | None) -> str:
    """``2xx`` ... ``5xx`` (``none`` when no status was sent, e.g. the client left)."""
    if status is None or not 100 <= status <= 599:
        return "none"
    return f"{status // 100}xx"


class Metrics:
    """The gateway's metric objects, and the text a scrape returns."""

    def __init__(self, *, org_label: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.org_label = org_label
        r = self.registry
        proxy_labels = ["status_class", "cause", *(["org_id"] if org_label else [])]
        self.proxy_requests = Counter(
            "tokenkeep_proxy_requests",
            "Proxied requests by status class and cause word (cause 'none' when no auth "
            "failure was named).",
            proxy_labels,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "tokenkeep_upstream_latency_seconds",
            "Time from sending a proxied request upstream to its response headers.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.refreshes = Counter(
            "tokenkeep_refreshes", "Token refreshes by result.", ["result"], registry=r
        )
        self.refresh_seconds = Histogram(
            "tokenkeep_refresh_duration_seconds",
            "Duration of a refresh under the lease (token call and commit), by result.",
            ["result"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.refresh_waiters = Gauge(
            "tokenkeep_refresh_waiters",
            "Callers waiting on an in-flight refresh (single flight).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.scheduler_lag_seconds = Gauge(
            "tokenkeep_scheduler_lag_seconds",
            "How overdue the oldest connection waiting for a proactive refresh is.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.scheduler_refreshes = Counter(
            "tokenkeep_scheduler_refreshes",
            "Proactive refreshes attempted by the scheduler, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.scheduler_due = Gauge(
            "tokenkeep_scheduler_due_connections",
            "Connections whose proactive refresh is due now (the backlog).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.connections = Gauge(
            "tokenkeep_connections",
            "Connections by status.",
            ["status"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.orgs_write_paused = Gauge(
            "tokenkeep_orgs_write_paused",
            "Orgs whose writes are paused now (maintenance).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.orgs_spiking = Gauge(
            "tokenkeep_orgs_session_error_spike",
            "Orgs in a session-error spike episode now.",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.write_pauses = Counter(
            "tokenkeep_org_write_pauses",
            "Org write pauses started (maintenance episodes) by this gateway.",
            registry=r,
        )
        self.spike_episodes = Counter(
            "tokenkeep_org_session_error_spikes",
            "Per-org session-error spike episodes started by this gateway.",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "tokenkeep_outbox_pending_events",
            "Webhook events not yet delivered (or failed for good).",
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.webhook_attempts = Counter(
            "tokenkeep_webhook_attempts",
            "Webhook delivery attempts, by outcome (delivered, retrying, failed, superseded).",
            ["outcome"],
            registry=r,
        )
        self.webhook_failures = Counter(
            "tokenkeep_webhook_delivery_failures",
            "Failed webhook delivery attempts.",
            registry=r,
        )
        self.log_dropped = Counter(
            "tokenkeep_log_queue_dropped",
            "Operation-log entries dropped because the in-memory queue was full.",
            registry=r,
        )
        self.log_queue_depth = Gauge(
            "tokenkeep_log_queue_depth",
            "Operation-log entries waiting to be written.",
            registry=r,
            multiprocess_mode="livesum",
        )

        # (status, cause, org) -> the labelled child: no label look-up per proxied call.
        self._call_children: dict[tuple[int | None, str | None, str | None], Any] = {}

    def __repr__(self) -> str:
        return f"Metrics(org_label={self.org_label})"

    def observe_call(self, status: int | None, cause: str | None, org_id: str | None) -> None:
        """Count one proxied request."""
        key = (status, cause, org_id if self.org_label else None)
        child = self._call_children.get(key)
        if child is None:
            labels = [status_class(status), cause or "none"]
            if self.org_label:
                labels.append(org_id or "none")
            child = self.proxy_requests.labels(*labels)
            if len(self._call_children) < _CHILD_CACHE_MAX:
                self._call_children[key] = child
        child.inc()

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's in multiprocess
        mode."""
        if multiprocess_dir() is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    @staticmethod
    def mark_process_dead(pid: int | None = None) -> None:
        """Drop this worker's live gauges from later scrapes (multiprocess mode only)."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(pid or os.getpid())
