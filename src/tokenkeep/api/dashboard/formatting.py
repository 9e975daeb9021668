"""How the dashboard writes times, durations, counts and statuses (pure functions)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

__all__ = [
    "STATUS_LABELS",
    "ago",
    "clock_time",
    "count",
    "duration",
    "plain_url",
    "relative",
    "status_label",
]

STATUS_LABELS = {
    "active": "Active",
    "needs_reauth": "Needs reconnect",
    "action_required": "Admin action",
    "error": "Error",
}


def duration(seconds: float | None) -> str:
    """``"2 h 5 min"``, ``"45 s"``; an em dash for ``None``."""
    if seconds is None:
        return "—"
    total = round(abs(seconds))
    if total < 60:
        return f"{total} s"
    minutes, _ = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def relative(when: datetime | None, now: datetime) -> str:
    """``"in 1 h 5 min"`` / ``"3 min ago"`` / ``"—"``."""
    if when is None:
        return "—"
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {duration(seconds)}" if seconds > 0 else f"{duration(seconds)} ago"


def ago(when: datetime | None, now: datetime) -> str:
    """:func:`relative`, for times in the past."""
    return relative(when, now)


def clock_time(when: datetime | None) -> str:
    """``"2026-01-01 12:00:05 UTC"``."""
    if when is None:
        return "—"
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def count(n: int | float | None) -> str:
    """``12,345``."""
    if n is None:
        return "—"
    return f"{n:,.0f}"


def status_label(status: str | None) -> str:
    """The words for a status (the status word itself when unknown)."""
    if status is None:
        return "—"
    return STATUS_LABELS.get(status, status)


def plain_url(url: str) -> str:
    """``scheme://host/path`` of ``url``: a query string or user info may hold a secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    tail = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{parts.path}{tail}"
