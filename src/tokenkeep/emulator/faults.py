"""Injected faults: latency, 5xx, a limit, a dropped connection or an OAuth error answer
(token endpoint, data API).

Kinds: ``latency`` (wait ``latency_seconds``, then answer normally), ``error`` (a 5xx,
``SERVER_UNAVAILABLE`` on the data API), ``limit`` (data API only: Salesforce's
``REQUEST_LIMIT_EXCEEDED``, status 403 as Salesforce answers it, or 429), ``drop`` (the
connection is cut), ``oauth_error`` (token endpoint only: HTTP 400
``{"error", "error_description"}`` of one's choice, by default Salesforce's
concurrent-refresh answer ``invalid_grant`` / ``token request is already being
processed``). An ``error`` or ``limit`` may first wait ``latency_seconds`` (a slow
storm) and may carry ``retry_after_seconds`` (sent as ``Retry-After``).

A fault applies to the next ``count`` matching calls, or until the emulator clock passes
``duration_seconds`` from now (or both: whichever ends first); with neither, until cleared.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from tokenkeep.clock import Clock

__all__ = ["Fault", "FaultError", "Faults"]

TARGETS = ("token", "data")
KINDS = ("latency", "error", "limit", "drop", "oauth_error")
LIMIT_STATUSES = (403, 429)
#: The description Salesforce answers a refresh with while another one of the same refresh
#: token is in flight.
ALREADY_PROCESSING = "token request is already being processed"


class FaultError(ValueError):
    """An invalid fault description (the admin API answers 400)."""


@dataclass
class Fault:
    """One injected fault."""

    fault_id: int
    target: str
    kind: str
    status: int = 503
    latency_seconds: float = 0.0
    remaining: int | None = None
    until: float | None = None
    org_id: str | None = None
    retry_after_seconds: int | None = None
    error: str = "invalid_grant"
    error_description: str = ALREADY_PROCESSING

    def public(self) -> dict[str, Any]:
        return {
            "id": self.fault_id,
            "target": self.target,
            "kind": self.kind,
            "status": self.status,
            "latency_seconds": self.latency_seconds,
            "remaining": self.remaining,
            "until": self.until,
            "org_id": self.org_id,
            "retry_after_seconds": self.retry_after_seconds,
            "error": self.error,
            "error_description": self.error_description,
        }


class Faults:
    """The active faults, consulted on every token and data call."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(
        self,
        *,
        target: str,
        kind: str,
        status: int | None = None,
        latency_seconds: float = 0.0,
        count: int | None = None,
        duration_seconds: float | None = None,
        org_id: str | None = None,
        retry_after_seconds: int | None = None,
        error: str = "invalid_grant",
        error_description: str = ALREADY_PROCESSING,
    ) -> Fault:
        """Register a fault; raises FaultError when the description is invalid."""
        if target not in TARGETS:
            raise FaultError(f"target must be one of {', '.join(TARGETS)}")
        if kind not in KINDS:
            raise FaultError(f"kind must be one of {', '.join(KINDS)}")
        if status is None:
            status = 403 if kind == "limit" else 503
        if kind == "oauth_error" and target != "token":
            raise FaultError("an oauth_error fault is for the token endpoint")
        if kind == "error" and not 500 <= status <= 599:
            raise FaultError("status must be a 5xx code")
        if kind == "limit" and (target != "data" or status not in LIMIT_STATUSES):
            raise FaultError("a limit fault is for the data API, with status 403 or 429")
        if kind == "latency" and not 0 < latency_seconds <= 60:
            raise FaultError("latency_seconds must be in (0, 60]")
        if not 0 <= latency_seconds <= 60:
            raise FaultError("latency_seconds must be in [0, 60]")
        if retry_after_seconds is not None and (
            isinstance(retry_after_seconds, bool)
            or not isinstance(retry_after_seconds, int)
            or retry_after_seconds < 0
        ):
            raise FaultError("retry_after_seconds must be a non-negative integer")
        if count is not None and count < 1:
            raise FaultError("count must be at least 1")
        if duration_seconds is not None and duration_seconds <= 0:
            raise FaultError("duration_seconds must be positive")
        until = None if duration_seconds is None else self._clock.time() + duration_seconds
        fault = Fault(
            next(self._ids),
            target,
            kind,
            status,
            latency_seconds,
            count,
            until,
            org_id,
            retry_after_seconds,
            error,
            error_description,
        )
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def public(self) -> list[dict[str, Any]]:
        self._expire()
        return [f.public() for f in self._faults]

    def _expire(self) -> None:
        now = self._clock.time()
        self._faults = [
            f
            for f in self._faults
            if (f.remaining is None or f.remaining > 0) and (f.until is None or f.until > now)
        ]

    def armed(self, target: str) -> bool:
        """Whether any fault for ``target`` is registered (it may still be for another org)."""
        return any(f.target == target for f in self._faults)

    def take(self, target: str, org_id: str | None) -> Fault | None:
        """The fault that applies to this call (consuming one of its ``count``), or None."""
        if not self._faults:  # the hot path: no faults, no work
            return None
        self._expire()
        for fault in self._faults:
            if fault.target == target and (fault.org_id is None or fault.org_id == org_id):
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None
