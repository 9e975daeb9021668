"""What an admin reads: a diagnosis in words, a status reason, one line per log entry.

The fixes are the diagnosis's own words (:data:`tokenkeep.diagnosis.words.FIXES`); this
module adds a headline per cause and turns operation-log rows into short sentences.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tokenkeep.api.dashboard.formatting import plain_url
from tokenkeep.diagnosis.words import FIXES, REVOKED_DETAIL
from tokenkeep.store.records import Connection, Operation
from tokenkeep.vocabulary import Cause, Reason

__all__ = [
    "CAUSE_HEADLINES",
    "DiagnosisView",
    "describe_operation",
    "diagnosis_view",
    "reason_words",
]

CAUSE_HEADLINES: dict[str, str] = {
    Cause.EXPIRED: "The session had expired",
    Cause.WRONG_INSTANCE: "Calls went to the wrong Salesforce host",
    Cause.IP_LOCKED: "The session is locked to another IP address",
    Cause.API_CLIENT_CONTROL: "The org does not allow this connected app (API Access Control)",
    Cause.REVOKED: "The user's authorization is gone",
    Cause.MAINTENANCE: "The org is in maintenance (read-only)",
    Cause.UNKNOWN: "No cause could be proven",
}


@dataclass(frozen=True, slots=True)
class DiagnosisView:
    """A verdict as the connection page shows it."""

    cause: str | None
    headline: str
    confidence: str | None
    evidence: list[str]
    fix: str
    at: datetime | None
    stored: bool  # from a diagnosis run (else: read from the status reason)


def _fix(cause: str | None) -> str:
    try:
        return FIXES[Cause(cause or "")]
    except ValueError:
        return FIXES[Cause.UNKNOWN]


def reason_words(reason: str | None) -> str:
    """``revoked:inactive_user`` -> ``revoked: the user was deactivated``."""
    parsed = Reason.parse(reason)
    if parsed is None:
        return "—"
    detail = REVOKED_DETAIL.get(parsed.detail or "")
    if detail is not None:
        return f"{parsed.word}: {detail}"
    return f"{parsed.word}: {parsed.detail.replace('_', ' ')}" if parsed.detail else parsed.word


def diagnosis_view(conn: Connection, stored: dict[str, Any] | None) -> DiagnosisView | None:
    """The last diagnosis, else what the status reason says; ``None`` when all is well."""
    if stored is not None:
        cause = stored.get("cause")
        at_text = stored.get("diagnosed_at")
        at = datetime.fromisoformat(at_text) if isinstance(at_text, str) else None
        headline = (
            CAUSE_HEADLINES.get(cause, cause) if cause else "Nothing is wrong: the connection works"
        )
        if stored.get("recovered") and cause:
            headline += " (recovered)"
        return DiagnosisView(
            cause=cause,
            headline=headline,
            confidence=stored.get("confidence"),
            evidence=[
                str(e.get("says") or e.get("name"))
                for e in stored.get("evidence") or []
                if isinstance(e, dict)
            ],
            fix=str(stored.get("fix") or (_fix(cause) if cause else "")),
            at=at,
            stored=True,
        )
    if conn.status == "active":
        return None
    parsed = Reason.parse(conn.status_reason)
    cause = parsed.cause.value if parsed is not None and parsed.cause is not None else None
    return DiagnosisView(
        cause=cause,
        headline=CAUSE_HEADLINES.get(cause or "", "The connection is not usable"),
        confidence=None,
        evidence=[f"Status reason: {reason_words(conn.status_reason)}"]
        + ([f"Last error: {conn.last_error}"] if conn.last_error else []),
        fix=_fix(cause),
        at=None,
        stored=False,
    )


def _call(op: Operation) -> str:
    d = op.detail
    text = f"{d.get('method', '')} {d.get('path', '')}".strip() or "call"
    if op.status_code is not None:
        text += f" → {op.status_code}"
    if d.get("error_code"):
        text += f" {d['error_code']}"
    if d.get("retried"):
        text += " (refreshed and retried)" if d.get("recovered") else " (retried)"
    return text


def _refresh(op: Operation) -> str:
    d = op.detail
    if op.outcome == "ok":
        parts = [f"Refreshed ({d.get('grant', 'refresh_token')})"]
        if d.get("version") is not None:
            parts.append(f"now version {d['version']}")
        if d.get("rotated"):
            parts.append("refresh token rotated")
        return ", ".join(parts)
    if op.outcome == "fenced":
        return "Refresh skipped: another worker refreshed first"
    return f"Refresh failed ({op.outcome}): {reason_words(d.get('reason'))}"


def describe_operation(op: Operation) -> str:
    """One sentence for a log entry (never a token: the log holds none)."""
    d = op.detail
    if op.kind == "call":
        return _call(op)
    if op.kind == "refresh":
        return _refresh(op)
    if op.kind == "status":
        text = f"Status {d.get('from') or '—'} → {d.get('to') or op.outcome}"
        if d.get("reason"):
            text += f" ({reason_words(d['reason'])})"
        return text + (f", by {d['by']}" if d.get("by") else "")
    if op.kind == "diagnosis":
        verdict = op.cause or "no problem found"
        confidence = f", {d['confidence']} confidence" if d.get("confidence") else ""
        return f"Diagnosis: {verdict}{confidence} ({op.outcome})"
    if op.kind in ("connect", "import"):
        who = f" user {d['user_id']}" if d.get("user_id") else ""
        return f"{'Connected' if op.kind == 'connect' else 'Imported'}{who}"
    if op.kind == "webhook":
        answer = d.get("status_code") or d.get("error") or op.outcome
        return f"Webhook {d.get('event_id', '')} attempt {d.get('attempt', '?')}: {answer}"
    if op.kind == "expiry_learned":
        return f"Learned session timeout: {d.get('seconds', '?')} s"
    return f"{op.kind.replace('_', ' ')}: {op.outcome}"


def endpoint_url(url: str) -> str:
    """An endpoint URL without its query string (it may carry a token)."""
    return plain_url(url)
