"""The overview's 24-hour chart, as inline SVG built on the server (no script, no network).

Two panels over the same hours: proxied calls (bars) and the calls that ended with a cause,
stacked by cause in the cause's colour. Every bar has a ``<title>`` (a tooltip), and the
page shows the legend and the numbers as HTML beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from tokenkeep.store.dashboard_queries import HourActivity
from tokenkeep.vocabulary import Cause

__all__ = ["CAUSE_COLOURS", "activity_chart"]

CAUSE_COLOURS: dict[str, str] = {
    Cause.EXPIRED: "#2563eb",
    Cause.WRONG_INSTANCE: "#7c3aed",
    Cause.IP_LOCKED: "#db2777",
    Cause.API_CLIENT_CONTROL: "#ea580c",
    Cause.REVOKED: "#dc2626",
    Cause.MAINTENANCE: "#ca8a04",
    Cause.UNKNOWN: "#6b7280",
}
_CALLS_COLOUR = "#0f766e"
_WIDTH, _LEFT, _RIGHT = 900, 60, 10
_PANEL, _GAP, _TOP, _AXIS = 110, 48, 36, 38


def _nice_max(value: int) -> int:
    """The smallest 1/2/5 x 10^n at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= value:
                return step * scale
        scale *= 10


def _short(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:g}M"
    if n >= 1000:
        return f"{n / 1000:g}k"
    return str(n)


def _panel(
    out: list[str],
    hours: Sequence[HourActivity],
    top: float,
    title: str,
    stacks: list[list[tuple[str, int, str]]],
) -> None:
    """One panel: a title, a y scale (0 and max), and one stacked bar per hour."""
    peak = _nice_max(max((sum(n for _, n, _ in stack) for stack in stacks), default=0))
    plot_w = _WIDTH - _LEFT - _RIGHT
    slot = plot_w / max(1, len(hours))
    bar_w = max(2.0, slot * 0.72)
    base = top + _PANEL
    out.append(f'<text x="{_LEFT}" y="{top - 10:.0f}" class="chart-title">{escape(title)}</text>')
    out.append(
        f'<line x1="{_LEFT}" y1="{base}" x2="{_WIDTH - _RIGHT}" y2="{base}" class="chart-axis"/>'
    )
    out.append(
        f'<line x1="{_LEFT}" y1="{top}" x2="{_WIDTH - _RIGHT}" y2="{top}" class="chart-grid"/>'
    )
    out.append(
        f'<text x="{_LEFT - 6}" y="{top + 4}" text-anchor="end" class="chart-label">'
        f"{_short(peak)}</text>"
    )
    out.append(
        f'<text x="{_LEFT - 6}" y="{base + 4}" text-anchor="end" class="chart-label">0</text>'
    )
    for i, (hour, stack) in enumerate(zip(hours, stacks, strict=True)):
        x = _LEFT + i * slot + (slot - bar_w) / 2
        y = base
        for label, n, colour in stack:
            if n <= 0:
                continue
            h = max(1.0, _PANEL * n / peak)
            y -= h
            tip = f"{hour.hour:%H:00} UTC: {n:,} {label}"
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{escape(tip)}</title></rect>'
            )


def activity_chart(hours: Sequence[HourActivity]) -> Markup:
    """The SVG for ``hours`` (oldest first), scaled to its container's width."""
    height = _TOP + _PANEL + _GAP + _PANEL + _AXIS
    out = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {height}" role="img" '
        'aria-label="Proxied calls and session errors by cause, last 24 hours" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    calls = [[("calls", h.calls, _CALLS_COLOUR)] for h in hours]
    causes = [
        [(str(cause), h.causes.get(cause, 0), colour) for cause, colour in CAUSE_COLOURS.items()]
        for h in hours
    ]
    _panel(out, hours, _TOP, "Proxied calls per hour", calls)
    second = _TOP + _PANEL + _GAP
    _panel(out, hours, second, "Failed calls by cause per hour", causes)
    slot = (_WIDTH - _LEFT - _RIGHT) / max(1, len(hours))
    for i, h in enumerate(hours):
        if i % 6 == 0 or i == len(hours) - 1:
            last = i == len(hours) - 1
            x = _WIDTH - _RIGHT if last else _LEFT + i * slot + slot / 2
            anchor = "end" if last else "middle"
            out.append(
                f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" '
                f'class="chart-label">{h.hour:%H:00}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 (built from numbers and escaped text only)
