"""What the tour's steps return and raise, and how the tour records them.

A step returns the lines printed under its ✓, or for a cause a :class:`CauseShown` (the
failing call and what tokenkeep concluded); it raises :class:`StepSkipped` when this
machine cannot run it and :class:`StepFailed` with what it saw instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

__all__ = [
    "CauseShown",
    "FailingCall",
    "StepFailed",
    "StepResult",
    "StepSkipped",
    "StepSpec",
    "TourResult",
    "Verdict",
    "duration",
    "error_code",
    "expect",
]


class StepFailed(Exception):
    """A tour step saw something other than what it shows (the message says what)."""


class StepSkipped(Exception):
    """A step this machine cannot run (the message says why); the tour goes on."""


@dataclass(frozen=True)
class FailingCall:
    """The call that failed, as the emulator's request log saw it."""

    method: str
    path: str
    status: int
    error_code: str | None
    by: str  # who made it: "the gateway", "a worker on 127.0.0.3"

    def __str__(self) -> str:
        code = f" {self.error_code}" if self.error_code else ""
        return f"{self.method} {self.path} → {self.status}{code}"


@dataclass(frozen=True)
class Verdict:
    """What tokenkeep concluded, as its API answered (``where`` says which route)."""

    cause: str | None
    confidence: str
    evidence: list[str]
    fix: str
    status: str
    where: str


@dataclass
class CauseShown:
    """One cause, set up and told apart: what a cause step returns."""

    connection_id: str
    setup: list[str]  # what happened in the org
    failing: FailingCall
    answer: str  # what the caller got
    verdict: Verdict
    after: list[str] = field(default_factory=list)  # what tokenkeep did next, checked
    # The summary table's cells.
    codes: str = ""  # "Salesforce's status → the app's"
    did: str = ""
    status: str = ""


@dataclass
class StepResult:
    """One numbered step of the tour: its title, verdict and what it printed."""

    number: int
    title: str
    ok: bool
    lines: list[str] = field(default_factory=list)
    cause: str | None = None  # the cause the step shows, if it is a cause step
    shown: CauseShown | None = None
    skipped: str | None = None  # why this machine could not run it (the step is still ok)


@dataclass
class TourResult:
    """All steps; ``ok`` when every step that ran succeeded and none was skipped."""

    steps: list[StepResult]
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and not self.skipped


@dataclass(frozen=True)
class StepSpec:
    """A step to run: ``required`` ends the tour when it fails (later steps need it)."""

    title: str
    run: Callable[[], Awaitable[list[str] | CauseShown]]
    required: bool = False
    cause: str | None = None


def expect(condition: bool, what: str, response: httpx.Response | None = None) -> None:
    """Fail the step with ``what`` (plus the response's status and error code) unless true."""
    if condition:
        return
    if response is not None:
        code = error_code(response)
        what += f": HTTP {response.status_code}" + (f" {code}" if code else "")
    raise StepFailed(what)


def error_code(response: httpx.Response) -> str | None:
    """Our ``{"error": {"code"}}`` or Salesforce's ``[{"errorCode"}]``, if the body has one."""
    try:
        doc = response.json()
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return str(doc["error"].get("code"))
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        return str(doc[0].get("errorCode"))
    return None


def duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    if minutes < 1:
        return f"{seconds:g} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
