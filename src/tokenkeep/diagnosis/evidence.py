"""What a diagnosis reasons over: the evidence, the verdict's shape, and the pure
builders that turn what the proxy saw into evidence.

:class:`Evidence` is every fact the probes or the proxy gathered (None: not known);
:class:`Diagnosis` the verdict (cause, confidence, facts in words, fix, status). The
reasoning itself is :func:`tokenkeep.diagnosis.classify.classify`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from tokenkeep.errors import ActionRequiredError, NeedsReauthError, TokenkeepError
from tokenkeep.lifecycle.tokens import FreshToken
from tokenkeep.providers.salesforce_answers import AnswerKind, ApiAnswer
from tokenkeep.vocabulary import Cause, Reason, Status

__all__ = [
    "ORG_BURST",
    "REFUSED",
    "Confidence",
    "Diagnosis",
    "Evidence",
    "Fact",
    "ProxiedFailure",
    "RefreshResult",
    "addresses_differ",
    "evidence_of",
    "expiry_proven",
    "host_of",
    "message_unusable",
    "observations",
    "with_refresh",
    "with_replay_answer",
]

_NOT_FOR_REST = "not valid for use with the rest api"
#: A burst of session errors on an org's OTHER connections within the last minute this
#: large means an org-wide event (maintenance, a mass revocation), not one token's age.
ORG_BURST = 3


class Confidence(StrEnum):
    """How sure a diagnosis is."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class RefreshResult(StrEnum):
    """What the refresh gave (when one was tried)."""

    OK = "ok"  # a new token
    REVOKED = "revoked"  # invalid_grant on the token we hold
    ACTION_REQUIRED = "action_required"  # the app or the org refused (an admin must act)
    TRANSIENT = "transient"  # 5xx, timeout, network: retried with backoff


@dataclass(frozen=True, slots=True)
class Fact:
    """One piece of evidence, in words: ``says`` is what an admin reads."""

    name: str
    value: Any
    says: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "says": self.says}


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything the probes or the proxy saw. None means "not known / not probed"."""

    # The failed answer.
    status: int | None = None
    error_code: str | None = None
    message: str | None = None
    host: str | None = None  # scheme://host[:port] the call went to
    instance_url: str | None = None  # the connection's instance_url when it was sent
    # The refresh after the failure (None: none was tried).
    refresh: RefreshResult | None = None
    refresh_reason: str | None = None  # the stored status_reason when it failed
    refreshed_instance_url: str | None = None
    # With a fresh token, from this gateway's address.
    replay_ok: bool | None = None  # the call (or a data probe) worked
    replay_unusable: bool | None = None  # ... answered "not valid for use with the REST API"
    replay_wrong_host: bool | None = None  # ... answered URL_NOT_RESET again
    replay_error_code: str | None = None  # ... its errorCode, if it failed otherwise
    identity_ok: bool | None = None  # userinfo/identity answered
    # The refused token itself.
    issued_to_address: str | None = None  # the address that obtained it
    used_from_address: str | None = None  # the address it was refused from
    refused_token_active: bool | None = None  # introspection of the refused token
    works_from_origin: bool | None = None  # sent again from the address that obtained it
    token_age_seconds: float | None = None
    expected_lifetime_seconds: float | None = None
    # The org.
    org_writes_paused: bool = False
    org_recent_session_errors: int = 0  # on its OTHER connections, last minute


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdict. ``status`` is the connection status to set (None: leave it)."""

    cause: Cause | None  # None: nothing is wrong
    confidence: Confidence
    evidence: tuple[Fact, ...]
    fix: str
    status: Status | None = None
    reason: Reason | None = None
    recovered: bool = False  # the call (or the probe) works now

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``/diagnose`` and ``/report`` (less the connection fields)."""
        return {
            "cause": self.cause.value if self.cause is not None else None,
            "confidence": self.confidence.value,
            "evidence": [f.as_dict() for f in self.evidence],
            "fix": self.fix,
            "recovered": self.recovered,
        }


def host_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of ``url`` (lower case), or None."""
    if not url:
        return None
    parts = urlsplit(url)
    if not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def message_unusable(message: str | None) -> bool:
    """The "not valid for use with the REST API" variant of INVALID_SESSION_ID."""
    return bool(message) and _NOT_FOR_REST in (message or "").lower()


@dataclass(frozen=True, slots=True)
class ProxiedFailure:
    """What the proxy saw of one call whose first answer was an auth failure."""

    connection_id: str
    first: ApiAnswer
    rejected: FreshToken
    local_address: str | None = None  # the address the first attempt left from
    refreshed: bool = False  # a refresh was attempted
    refresh_error: TokenkeepError | None = None
    fresh: FreshToken | None = None
    replay: ApiAnswer | None = None


#: Answers that refuse the session (a refresh may or may not help; never "worked").
REFUSED = frozenset(
    {AnswerKind.SESSION_INVALID, AnswerKind.SESSION_UNUSABLE, AnswerKind.WRONG_INSTANCE}
)


def evidence_of(failure: ProxiedFailure) -> Evidence:
    """What the proxy's own attempts show (pure: no probe, no org signals)."""
    first, rejected, replay = failure.first, failure.rejected, failure.replay
    evidence = Evidence(
        status=first.status,
        error_code=first.error_code,
        message=first.message,
        host=host_of(rejected.instance_url),
        instance_url=rejected.instance_url,
        refreshed_instance_url=failure.fresh.instance_url if failure.fresh else None,
        replay_ok=(replay.kind not in REFUSED) if replay is not None else None,
        replay_unusable=(replay.kind is AnswerKind.SESSION_UNUSABLE) if replay else None,
        replay_wrong_host=(replay.kind is AnswerKind.WRONG_INSTANCE) if replay else None,
        replay_error_code=replay.error_code if replay else None,
        issued_to_address=rejected.issued_to_address,
        used_from_address=failure.local_address,
    )
    return with_refresh(evidence, failure.refresh_error) if failure.refreshed else evidence


def with_refresh(evidence: Evidence, exc: TokenkeepError | None) -> Evidence:
    """The refresh's outcome as evidence (``exc`` None: it gave a new token)."""
    if exc is None:
        return replace(evidence, refresh=RefreshResult.OK)
    if isinstance(exc, NeedsReauthError):
        return replace(
            evidence,
            refresh=RefreshResult.REVOKED,
            refresh_reason=str(exc.reason or "revoked"),
        )
    if isinstance(exc, ActionRequiredError):
        return replace(
            evidence,
            refresh=RefreshResult.ACTION_REQUIRED,
            refresh_reason=str(exc.reason) if exc.reason else None,
        )
    return replace(evidence, refresh=RefreshResult.TRANSIENT)


def with_replay_answer(evidence: Evidence, answer: ApiAnswer) -> Evidence:
    """A replay (or a probe with a fresh token) answered ``answer``."""
    kind = answer.kind
    return replace(
        evidence,
        replay_ok=kind not in REFUSED,
        replay_unusable=kind is AnswerKind.SESSION_UNUSABLE,
        replay_wrong_host=kind is AnswerKind.WRONG_INSTANCE,
    )


def addresses_differ(e: Evidence) -> bool:
    return (
        e.issued_to_address is not None
        and e.used_from_address is not None
        and e.issued_to_address != e.used_from_address
    )


def expiry_proven(e: Evidence) -> bool:
    """Evidence of an expiry, not of something that merely looks like one."""
    same_host = host_of(e.refreshed_instance_url) in (None, host_of(e.instance_url))
    return (
        e.replay_ok is True
        and same_host
        and not addresses_differ(e)
        and e.refused_token_active is not True
        and not e.org_writes_paused
        and e.org_recent_session_errors < ORG_BURST
    )


def observations(e: Evidence) -> tuple[Fact, ...]:
    """The plain observations every verdict carries (what was seen, before reasoning)."""
    out: list[Fact] = []
    if e.status is not None:
        code = f" {e.error_code}" if e.error_code else ""
        text = f' "{e.message}"' if e.message else ""
        out.append(Fact("answer", e.status, f"Salesforce answered {e.status}{code}{text}."))
    if e.refresh is not None:
        out.append(Fact("refresh", e.refresh.value, f"The refresh after it: {e.refresh.value}."))
    if e.token_age_seconds is not None:
        out.append(
            Fact(
                "token_age_seconds",
                round(e.token_age_seconds),
                f"The refused token was {round(e.token_age_seconds)} s old"
                + (
                    f" (expected lifetime {round(e.expected_lifetime_seconds)} s)."
                    if e.expected_lifetime_seconds
                    else "."
                ),
            )
        )
    if e.refused_token_active is not None:
        out.append(
            Fact(
                "introspection_active",
                e.refused_token_active,
                "Introspection says the refused token is "
                + ("still active." if e.refused_token_active else "no longer active."),
            )
        )
    if e.identity_ok is not None:
        out.append(
            Fact(
                "identity",
                e.identity_ok,
                "A fresh token " + ("works" if e.identity_ok else "fails") + " for identity.",
            )
        )
    return tuple(out)
