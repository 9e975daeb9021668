"""What the proxy records of each call, once it is answered: the log line, the operation-log
entry, the metrics, org health's counts and the last ``Sforce-Limit-Info`` of each org.

Everything here is synchronous and in memory (a dict write, a counter increment, a
``deque.append``); the operation log and org health flush to the store in the background.
Nothing here ever sees a token: :class:`~tokenkeep.proxy.respond.Call` holds none.

The operation-log entry of a proxied call (``kind="call"``): ``connection_id``, ``org_id``,
``status_code``, ``cause``, ``duration_ms``, ``outcome`` (``ok`` below 400, else ``error``),
and in ``detail``: ``method``, ``path`` (without the query string unless
``TOKENKEEP_LOG_QUERY=1``: a SOQL query can hold customer data), ``user_id``,
``integration``, ``error_code`` (Salesforce's ``errorCode``, or ours when tokenkeep
answered), ``answered_by`` (``salesforce`` | ``tokenkeep``), ``retried``, ``recovered``
and ``request_id``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tokenkeep.clock import Clock
from tokenkeep.observability.metrics import Metrics
from tokenkeep.observability.oplog import OperationQueue
from tokenkeep.orgs.health import OrgHealth
from tokenkeep.proxy.respond import Call, Scope, printable

__all__ = ["CallRecorder", "LimitInfo"]

_LIMIT_HEADER = b"sforce-limit-info"


@dataclass(frozen=True, slots=True)
class LimitInfo:
    """The last ``Sforce-Limit-Info`` seen for an org, and when (our clock, epoch seconds)."""

    value: str
    seen_at: float


class CallRecorder:
    """Records answered calls; each sink is optional (a bare proxy records only its log)."""

    def __init__(
        self,
        clock: Clock,
        logger: Any,
        *,
        log_query: bool = False,
        oplog: OperationQueue | None = None,
        metrics: Metrics | None = None,
        org_health: OrgHealth | None = None,
    ) -> None:
        self._clock = clock
        self._log = logger
        self._bound: Any = None  # bound once: a lazy structlog proxy re-binds per call
        self._log_query = log_query
        self.oplog = oplog
        self.metrics = metrics
        self.org_health = org_health
        self._limits: dict[str, LimitInfo] = {}

    def limit_info(self, org_key: str) -> LimitInfo | None:
        """The last ``Sforce-Limit-Info`` relayed for ``org_key``."""
        return self._limits.get(org_key)

    def remember_limits(self, org_key: str, raw_headers: Any) -> None:
        """Keep the response's ``Sforce-Limit-Info`` (one dict write, no I/O)."""
        for key, value in raw_headers:
            if key.lower() == _LIMIT_HEADER:
                self._limits[org_key] = LimitInfo(value.decode("latin-1"), self._clock.time())
                return

    def count_for_health(
        self,
        call: Call,
        org_id: str | None,
        integration_key: str | None,
        org_key: str,
    ) -> None:
        """Org health's counts of an answered call (and the org's last limits)."""
        health = self.org_health
        if health is None or org_id is None:
            return
        health.record_call(
            org_id, integration_key, cause=call.cause, session_error=call.session_error
        )
        limits = self._limits.get(org_key)
        if limits is not None:
            health.remember_limits(org_id, limits.value, seen_at=limits.seen_at)

    def finish(self, call: Call, scope: Scope, duration: float) -> None:
        """Record one finished call (answered, refused or abandoned by the client)."""
        duration_ms = round(duration * 1000, 2)
        path = call.path if call.path is not None else printable(scope)
        if self._log_query and call.path is not None and call.query:
            path = f"{path}?{call.query}"
        log = self._bound
        if log is None:
            log = self._bound = self._log.bind()
        # Every call is logged at INFO; when INFO is off, the fields are not even built.
        enabled = getattr(log, "is_enabled_for", None)
        if enabled is None or enabled(logging.INFO):
            log.info(
                "proxy.call",
                request_id=call.request_id,
                connection_id=call.connection_id,
                org_id=call.org_id,
                method=call.method,
                path=path,
                status=call.status,
                duration_ms=duration_ms,
                retried=call.retried,
                recovered=call.recovered,
                cause=call.cause,
            )
        metrics = self.metrics
        if metrics is not None:
            metrics.observe_call(call.status, call.cause, call.org_id)
        oplog = self.oplog
        if oplog is not None:
            status = call.status
            oplog.put(
                {
                    "kind": "call",
                    "outcome": "ok" if status is not None and status < 400 else "error",
                    "connection_id": call.connection_id,
                    "org_id": call.org_id,
                    "cause": call.cause,
                    "status_code": status,
                    "duration_ms": duration_ms,
                    "detail": {
                        "method": call.method,
                        "path": path[:500],
                        "user_id": call.user_id,
                        "integration": call.integration,
                        "error_code": call.error_code,
                        "answered_by": call.answered_by,
                        "retried": call.retried,
                        "recovered": call.recovered,
                        "request_id": call.request_id,
                    },
                }
            )
