"""``tokenkeep logs``: the operation log, read from the store directly (like the other admin
commands), as a table, or JSON lines with ``--json``; ``--follow`` keeps printing new
entries.

Times: ``--since``/``--until`` take ``14:00`` (today, local time; yesterday if that is still
ahead), ``15m`` / ``2h`` / ``3d`` (that long ago) or an ISO-8601 date-time (no offset means
local time).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from tokenkeep.cli._shared import console, fail, run, settings_or_fail, store_session
from tokenkeep.observability.logging import configure_logging

__all__ = ["logs", "parse_when"]

_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FOLLOW_POLL_SECONDS = 1.0
_TABLE_MIN_WIDTH = 120  # narrower terminals get two lines per entry instead of a table
# Out-of-order commits (two transactions, the later id first) are caught by re-reading a
# window of ids below the last one seen.
_FOLLOW_OVERLAP = 1000


def parse_when(text: str, now: datetime) -> datetime:
    """An aware UTC datetime for ``14:00``, ``15m`` or an ISO-8601 text (``now`` aware)."""
    value = text.strip()
    ago = _AGO.match(value)
    if ago:
        return now - timedelta(seconds=int(ago.group(1)) * _UNITS[ago.group(2)])
    local_now = now.astimezone()
    clock = _CLOCK.match(value)
    if clock:
        hour, minute, second = (int(g) if g else 0 for g in clock.groups())
        if hour > 23 or minute > 59 or second > 59:
            raise ValueError(f"{text!r} is not a time of day")
        at = local_now.replace(hour=hour, minute=minute, second=second, microsecond=0)
        if at > local_now:
            at -= timedelta(days=1)
        return at.astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 14:00, 15m, 2h, 3d or an ISO-8601 date-time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=local_now.tzinfo)
    return parsed.astimezone(UTC)


def _summary(detail: dict[str, Any], kind: str) -> str:
    if kind == "call":
        parts = [str(detail.get("method", "")), str(detail.get("path", ""))]
        if detail.get("error_code"):
            parts.append(str(detail["error_code"]))
        if detail.get("retried"):
            parts.append("retried" + (" ok" if detail.get("recovered") else ""))
        return " ".join(p for p in parts if p)
    if kind == "status":
        return f"{detail.get('from')} -> {detail.get('to')} ({detail.get('reason') or '-'})"
    keys = ("grant", "reason", "event_type", "error", "fix")
    return ", ".join(f"{k}={detail[k]}" for k in keys if detail.get(k))[:120]


def _row(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "kind": entry.kind,
        "connection_id": entry.connection_id,
        "org_id": entry.org_id,
        "outcome": entry.outcome,
        "cause": entry.cause,
        "status_code": entry.status_code,
        "duration_ms": entry.duration_ms,
        "detail": entry.detail,
    }


class _Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @staticmethod
    def _cells(e: Any) -> list[str]:
        what = _summary(e.detail, e.kind)
        if e.duration_ms is not None:
            what += f" ({e.duration_ms:.0f} ms)"
        return [
            e.at.astimezone().strftime("%m-%d %H:%M:%S"),
            e.kind,
            e.connection_id or "-",
            e.org_id or "-",
            str(e.status_code) if e.status_code is not None else e.outcome,
            e.cause or "-",
            escape(what),
        ]

    @staticmethod
    def _stacked(entries: list[Any]) -> None:
        """Narrow terminals: one head line per entry, what happened indented below it."""
        for e in entries:
            at, kind, connection, org, status, cause, what = _Printer._cells(e)
            cause_text = f" [bold]{cause}[/]" if cause != "-" else ""
            console.print(
                f"[dim]{at}[/] [cyan]{kind:<9}[/] {status}{cause_text}  "
                f"{escape(connection)} [dim]{escape(org)}[/]"
            )
            console.print(f"               {what}", soft_wrap=False)

    def print(self, entries: list[Any]) -> None:
        if self.as_json:
            for entry in entries:
                sys.stdout.write(json.dumps(_row(entry), default=str) + "\n")
            sys.stdout.flush()
            return
        if not entries:
            return
        if console.width < _TABLE_MIN_WIDTH:
            self._stacked(entries)
            return
        table = Table(
            Column("at", no_wrap=True),
            Column("kind", no_wrap=True),
            Column("connection", no_wrap=True, max_width=24, overflow="ellipsis"),
            Column("org", no_wrap=True),
            Column("status", no_wrap=True),
            Column("cause", no_wrap=True),
            Column("what", overflow="fold", ratio=1),
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for e in entries:
            table.add_row(*self._cells(e))
        console.print(table)


def logs(
    *,
    org: Annotated[str | None, typer.Option("--org", help="Only this org id.")] = None,
    connection: Annotated[
        str | None, typer.Option("--connection", help="Only this connection id.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="call, refresh, status, diagnosis, connect, import, ...")
    ] = None,
    cause: Annotated[str | None, typer.Option(help="expired, revoked, ip_locked, ...")] = None,
    status: Annotated[str | None, typer.Option(help="An HTTP status (401) or 4xx.")] = None,
    since: Annotated[str | None, typer.Option(help="14:00, 15m, 2h, 3d or ISO-8601.")] = None,
    until: Annotated[str | None, typer.Option(help="Same forms as --since.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new entries.")
    ] = False,
    follow_for: Annotated[
        float | None,
        typer.Option("--for", min=0.1, help="With --follow: stop after this many seconds."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
) -> None:
    """Show the operation log: every refresh, proxied call, diagnosis and status change."""
    from tokenkeep.store.operations import LogQuery, parse_status

    settings = settings_or_fail()
    configure_logging(settings.log_format, "WARNING")
    now = datetime.now(UTC)
    try:
        since_at = parse_when(since, now) if since else None
        until_at = parse_when(until, now) if until else None
    except ValueError as exc:
        fail(str(exc))
    try:
        status_code, status_class = parse_status(status)
    except ValueError as exc:
        fail(f"--status {status!r}: use {exc}")
    query = LogQuery(
        connection_id=connection,
        org_id=org,
        kind=kind,
        cause=cause,
        status_code=status_code,
        status_class=status_class,
        since=since_at,
        until=until_at,
        limit=limit,
    )
    printer = _Printer(json_output)

    async def go() -> None:
        async with store_session(settings) as store:
            page = await store.operations.page(query)
            entries = list(reversed(page.entries))  # oldest first, like a log file
            printer.print(entries)
            if not follow:
                return
            seen = {e.id for e in entries}
            last_id = max(seen, default=0)
            # What is already there (shown or beyond --limit) is not new: only later ids are.
            window = await store.operations.tail(
                query, after_id=max(0, last_id - _FOLLOW_OVERLAP), limit=1000
            )
            seen.update(e.id for e in window)
            last_id = max(seen, default=0)
            deadline = None if follow_for is None else time.monotonic() + follow_for
            while deadline is None or time.monotonic() < deadline:
                await asyncio.sleep(_FOLLOW_POLL_SECONDS)
                fresh = [
                    e
                    for e in await store.operations.tail(
                        query, after_id=max(0, last_id - _FOLLOW_OVERLAP), limit=1000
                    )
                    if e.id not in seen
                ]
                printer.print(fresh)
                for e in fresh:
                    seen.add(e.id)
                    last_id = max(last_id, e.id)
                if len(seen) > 4 * _FOLLOW_OVERLAP:
                    seen = {i for i in seen if i > last_id - _FOLLOW_OVERLAP}

    try:
        run(go())
    except KeyboardInterrupt:
        pass
