"""Injected faults: latency, 5xx or a dropped connection on the token endpoint or data API,
or (token endpoint only) an OAuth error answer of one's choice (``kind="oauth_error"``:
HTTP 400 ``{"error", "error_description"}``, e.g. Salesforce's concurrent-refresh answer
``invalid_grant`` / ``token request is already being processed``).

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
KINDS = ("latency", "error", "drop", "oauth_error")
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
        status: int = 503,
        latency_seconds: float = 0.0,
        count: int | None = None,
        duration_seconds: float | None = None,
        org_id: str | None = None,
        error: str = "invalid_grant",
        error_description: str = ALREADY_PROCESSING,
    ) -> Fault:
        """Register a fault; raises FaultError when the description is invalid."""
        if target not in TARGETS:
            raise FaultError(f"target must be one of {', '.join(TARGETS)}")
        if kind not in KINDS:
            raise FaultError(f"kind must be one of {', '.join(KINDS)}")
        if kind == "oauth_error" and target != "token":
            raise FaultError("an oauth_error fault is for the token endpoint")
        if kind == "error" and not 500 <= status <= 599:
            raise FaultError("status must be a 5xx code")
        if kind == "latency" and not 0 < latency_seconds <= 60:
            raise FaultError("latency_seconds must be in (0, 60]")
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
