"""The refresh decision, as a pure function: ``decide(snapshot, need, now)``.

Given what the row says (:class:`Snapshot`), what the caller needs (:class:`Need`) and the
time, the coordinator does one of four things:

* :class:`Serve` — hand out the stored token (it meets the need; or the provider is
  failing and backing off but the token still lives; or it cannot be refreshed — an oauth2
  import without a refresh token — but still lives);
* :class:`Refresh` — take the lease and call the token endpoint;
* :class:`Wait` — the provider is failing and backing off and the token is dead: answer
  503 with the retry time, never hammer a provider that is down;
* :class:`Refuse` — the row says a human must act (``needs_reauth`` / ``action_required``):
  answer 409/424 at once, no upstream call.

No I/O, no clock reads: every branch is a table test (tests/lifecycle/test_policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tokenkeep.errors import ActionRequiredError, NeedsReauthError, TokenkeepError
from tokenkeep.vocabulary import AuthMode, Reason, Status

__all__ = [
    "Decision",
    "Need",
    "Refresh",
    "Refuse",
    "Serve",
    "Snapshot",
    "Wait",
    "decide",
    "lives_for",
    "refusal_error",
]


def lives_for(expires_at: float | None, seconds: float, now: float) -> bool:
    """True when a token expiring at ``expires_at`` (epoch seconds; None = unknown) is known
    to live at least ``seconds`` more at ``now``. THE time-to-live check: a token whose
    expiry is unknown never counts as valid."""
    return expires_at is not None and expires_at - now >= seconds


@dataclass(frozen=True, slots=True)
class Need:
    """What a caller needs; a flight's result is reused by joiners whose need it meets.

    ``min_ttl``: the token must live at least this long. ``newer_than``: the token must come
    from a row version greater than this (a rejected token, a forced refresh, a scheduler
    claim). ``ignore_backoff``: the scheduler and an explicit refresh may try while a
    failing connection backs off (the scheduler only claims a row once its retry time has
    come).
    """

    min_ttl: float | None = None
    newer_than: int | None = None
    ignore_backoff: bool = False

    def met_by(self, version: int, expires_at: float | None, now: float) -> bool:
        """Does a token of row ``version`` expiring at ``expires_at`` meet this need?"""
        if self.newer_than is not None and version <= self.newer_than:
            return False
        return self.min_ttl is None or lives_for(expires_at, self.min_ttl, now)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the decision reads of a connection row (epoch seconds on our clock)."""

    version: int
    status: str
    status_reason: str | None
    expires_at: float | None
    refresh_attempts: int
    next_refresh_at: float | None
    has_refresh_token: bool
    auth_mode: AuthMode = AuthMode.OAUTH2

    @staticmethod
    def epoch(value: datetime | None) -> float | None:
        """A stored datetime as epoch seconds (None stays None)."""
        return value.timestamp() if value is not None else None


@dataclass(frozen=True, slots=True)
class Serve:
    """Hand out the stored token. ``why``: ``fresh``, ``backing_off``, ``no_refresh_token``."""

    why: str


@dataclass(frozen=True, slots=True)
class Refresh:
    """Take the lease and refresh."""


@dataclass(frozen=True, slots=True)
class Wait:
    """The provider is failing; try again at ``retry_at`` (epoch seconds)."""

    retry_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """A human must act first (``status`` is needs_reauth or action_required)."""

    status: Status
    reason: str | None


Decision = Serve | Refresh | Wait | Refuse


def decide(snap: Snapshot, need: Need, now: float, *, under_lease: bool = False) -> Decision:
    """What to do for ``need`` with the row as ``snap`` shows it.

    ``under_lease``: the re-read after taking the lease. Only the status and the need
    count then: whoever holds the lease refreshes (a forced refresh or a scheduler claim
    while backing off; an import without a refresh token fails as ``no_refresh_token``).
    """
    if snap.status in (Status.NEEDS_REAUTH, Status.ACTION_REQUIRED):
        return Refuse(Status(snap.status), snap.status_reason)
    if need.met_by(snap.version, snap.expires_at, now):
        return Serve("fresh")
    if under_lease:
        return Refresh()
    alive = snap.expires_at is not None and snap.expires_at > now
    retry_at = snap.next_refresh_at
    backing_off = snap.refresh_attempts > 0 and retry_at is not None and retry_at > now
    if backing_off and retry_at is not None and not need.ignore_backoff:
        if alive and need.newer_than is None:
            return Serve("backing_off")
        return Wait(retry_at, snap.refresh_attempts)
    # An oauth2 connection without a refresh token (an import) cannot refresh: its token is
    # served, however short its remaining life, until its known expiry; only after that does
    # the refresh attempt answer needs_reauth (no_refresh_token).
    if (
        alive
        and need.newer_than is None
        and not snap.has_refresh_token
        and snap.auth_mode is AuthMode.OAUTH2
    ):
        return Serve("no_refresh_token")
    return Refresh()


def refusal_error(
    connection_id: str, status: Status, reason: str | None, **details: object
) -> TokenkeepError:
    """The error a :class:`Refuse` (or a failed refresh's verdict) answers with."""
    if status is Status.NEEDS_REAUTH:
        return NeedsReauthError(
            f"connection {connection_id} needs to be re-authorized ({reason})",
            reason=reason,
            details={"connection_id": connection_id, "reason": reason, **details},
        )
    text = reason or Status.ACTION_REQUIRED.value
    parsed = Reason.parse(text)
    word = parsed.word if parsed is not None else text
    return ActionRequiredError(
        f"connection {connection_id} needs an org admin to act ({text})",
        reason=text,
        details={"connection_id": connection_id, "reason": reason, **details, "cause": word},
    )
