"""Operation-log entries as the drivers take them in a batch (``OperationLog.insert_many``).

This runs once per proxied call, so it is written for speed and measured
(``bench/oplog.py``): one pass over each entry, no intermediate dicts.

* ``at`` is epoch seconds (what the operation queue stores) or an aware datetime. It becomes
  UTC text with microseconds: naive on SQLite, as
  :class:`~tokenkeep.store.models.UTCDateTime` stores it, and with ``+00`` for PostgreSQL's
  ``COPY``. The ``YYYY-MM-DD HH:MM:SS`` part is cached per second (a busy proxy logs many
  calls in the same second).
* ``detail`` becomes JSON text (orjson; the stdlib's encoder where orjson refuses a value,
  e.g. a lone surrogate). In a text column a NUL becomes U+FFFD (PostgreSQL text refuses
  NUL) and a lone surrogate "?"; a duration that is not a number becomes NULL. A logged
  value never breaks (and so never stalls) its batch.
* On SQLite the whole batch is one JSON array of rows (each in the column order of
  :data:`COLUMNS`; ``detail`` a JSON string holding its JSON text) for one ``INSERT ...
  SELECT`` over ``json_each`` (why: ``OperationLog.insert_many``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["COLUMNS", "pg_rows", "sqlite_batch", "utc_text"]

COLUMNS = (
    "at",
    "kind",
    "connection_id",
    "org_id",
    "outcome",
    "cause",
    "status_code",
    "duration_ms",
    "detail",
)

_second: tuple[int, str] = (-1, "")  # the last second formatted (one tuple: one assignment)


def utc_text(at: float | datetime) -> str:
    """``at`` as naive UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``; a naive datetime is refused."""
    global _second
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise ValueError("naive datetime given to the operation log; use an aware UTC one")
        return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    second, micros = divmod(round(at * 1_000_000), 1_000_000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{micros:06d}"


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate, an int beyond 64 bits
        return json.dumps(value, separators=(",", ":"), default=str)


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    if not text.isascii():  # a lone surrogate cannot be stored: it becomes "?"
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _row(entry: Mapping[str, Any], at: str) -> list[Any]:
    status = entry.get("status_code")
    duration = entry.get("duration_ms")
    if duration is not None:
        duration = float(duration)
        if not math.isfinite(duration):
            duration = None  # JSON (SQLite's batch) has no NaN
    detail = entry.get("detail")
    return [
        at,
        _text(entry["kind"]),
        _text(entry.get("connection_id")),
        _text(entry.get("org_id")),
        _text(entry["outcome"]),
        _text(entry.get("cause")),
        int(status) if status is not None else None,
        duration,
        _json(detail) if detail else "{}",
    ]


def sqlite_batch(entries: Iterable[Mapping[str, Any]]) -> str:
    """The batch as the JSON text SQLite's ``INSERT ... SELECT ... FROM json_each(?)`` reads."""
    rows = [_row(entry, utc_text(entry["at"])) for entry in entries]
    return _json(rows)


def pg_rows(entries: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
    """The batch as rows for ``COPY operations (COLUMNS) FROM STDIN``."""
    return [_row(entry, utc_text(entry["at"]) + "+00") for entry in entries]
