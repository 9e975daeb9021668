"""The value rules every request field and query parameter of the control API shares.

Control characters never reach the store: PostgreSQL refuses a NUL in text (a 500 from
the database before these rules), SQLite would keep it, and a CR/LF in a value that later
becomes a header or a URL is a header-injection attempt. Each rule is also in the OpenAPI
document (a ``pattern``), so a client generated from it knows the rule too:

* :data:`Text` — a string field: no control character (``\\x00``-``\\x1f``, ``\\x7f``);
* :data:`SecretText` — the same for a secret (kept a ``SecretStr``); :data:`PemText` lets
  a PEM key keep its line breaks;
* :data:`JsonValue` / :data:`Metadata` — free-form JSON whose every key and string is
  :data:`Text`, at any depth;
* :func:`text_query` — a query or path value under the same rule;
* :data:`IsoDatetime` — an ISO-8601 date-time only (a bare number is not a date);
* :data:`EpochMillis` — Salesforce's ``issued_at``: epoch milliseconds, a number or a
  string of digits, within the years a ``datetime`` can hold.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeAlias

from fastapi import Path, Query
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from typing_extensions import TypeAliasType

__all__ = [
    "HTTPS_URL_PATTERN",
    "HTTP_URL_PATTERN",
    "MAX_EPOCH_MILLIS",
    "PATTERN_SENTENCES",
    "PRINTABLE",
    "RETURN_URL_PATTERN",
    "EpochMillis",
    "IsoDatetime",
    "JsonValue",
    "Metadata",
    "PemText",
    "SecretText",
    "Text",
    "Url",
    "json_problem",
    "text_path",
    "text_query",
]

#: No control character anywhere (C0 and DEL): the rule of every text value.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
#: A PEM document keeps its tabs and line breaks; no other control character.
_PEM = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PEM_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# An absolute http(s) URL: a host name or IPv4 address, a port (0-65535), then anything
# printable. (No IPv6 literal: no Salesforce host, emulator or webhook receiver needs one.)
_PORT = r"(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
_URL_REST = r"://[A-Za-z0-9._~-]+" + _PORT + r"(?:[/?#][^\x00-\x20\x7f]*)?$"
#: The shape every URL field must have (enforced).
HTTP_URL_PATTERN = "^https?" + _URL_REST
#: What the document states for a URL that receives tokens: https only. (Plain http is let
#: through for loopback hosts with TOKENKEEP_ALLOW_INSECURE_LOOPBACK, for the emulator and
#: local tests: a development exception the production contract does not offer.)
HTTPS_URL_PATTERN = "^https" + _URL_REST
#: A connect flow's ``return_url``: the shape; the allow-list is checked on top of it
#: (:mod:`tokenkeep.api.return_urls`).
RETURN_URL_PATTERN = r"^https?://[^\x00-\x20\x7f\\/?#@]+(?:[/?#][^\x00-\x20\x7f\\]*)?$"
#: The sentence a pattern mismatch is reported with (instead of the regular expression).
PATTERN_SENTENCES = {
    PRINTABLE: "must not contain control characters (NUL, CR, LF, ...)",
    HTTP_URL_PATTERN: "must be an absolute http:// or https:// URL with a host name",
    RETURN_URL_PATTERN: (
        "must be an absolute http:// or https:// URL without spaces, control characters, "
        "backslashes or user info, on TOKENKEEP_CONNECT_RETURN_URLS"
    ),
}
#: 14 digits of milliseconds: up to the year 5138, well inside what ``datetime`` holds.
MAX_EPOCH_MILLIS = 99_999_999_999_999
_MILLIS_TEXT = r"^[0-9]{1,14}$"
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _printable(value: object) -> object:
    # Before any stripping: "a\n" must be refused, not trimmed into "a".
    if isinstance(value, str) and _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, CR, LF, ...)")
    return value


def _pem(value: object) -> object:
    if isinstance(value, str) and _PEM_CONTROL.search(value):
        raise ValueError("must not contain control characters other than line breaks")
    return value


def _epoch_millis(value: object) -> object:
    # Salesforce sends issued_at as a string of epoch milliseconds; a number is accepted too.
    in_range = (
        isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH_MILLIS
    )
    if not in_range and not (isinstance(value, str) and re.match(_MILLIS_TEXT, value)):
        raise ValueError(
            f"must be epoch milliseconds (as Salesforce sends it), from 0 to {MAX_EPOCH_MILLIS}"
        )
    return value


def _json_without_control(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    # One clear sentence for the common mistake instead of one error per union member.
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(f"{problem} must not contain control characters (NUL, CR, LF, ...)")
    return handler(value)


def _iso_only(value: object) -> object:
    # pydantic would read "1767225600" or -5e16 as a Unix timestamp: the API says ISO-8601.
    if not isinstance(value, datetime) and (
        not isinstance(value, str) or not _ISO_DATETIME.match(value)
    ):
        raise ValueError("must be an ISO-8601 date-time (2026-01-01T00:00:00Z)")
    return value


# The constraint before the validator: the validator then runs first (on the raw value)
# and the pattern stays in the JSON schema.
Text: TypeAlias = Annotated[str, StringConstraints(pattern=PRINTABLE), BeforeValidator(_printable)]
#: An absolute http(s) URL (:data:`HTTP_URL_PATTERN`). One pattern per field: pydantic keeps
#: only the last one, so a URL is not also a :data:`Text` (the URL pattern is stricter).
Url: TypeAlias = Annotated[
    str, StringConstraints(pattern=HTTP_URL_PATTERN), BeforeValidator(_printable)
]
SecretText: TypeAlias = Annotated[
    SecretStr, BeforeValidator(_printable), Field(json_schema_extra={"pattern": PRINTABLE})
]
PemText: TypeAlias = Annotated[
    SecretStr, BeforeValidator(_pem), Field(json_schema_extra={"pattern": _PEM})
]
IsoDatetime: TypeAlias = Annotated[datetime, BeforeValidator(_iso_only)]
EpochMillis: TypeAlias = Annotated[
    int | str,
    BeforeValidator(_epoch_millis),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_EPOCH_MILLIS},
                {"type": "string", "pattern": _MILLIS_TEXT},
            ],
            "description": "epoch milliseconds, a number or a string of digits",
        }
    ),
]

# Free-form JSON (connection metadata) whose every key and string obeys :data:`Text`, at
# any depth. Strict scalars: "1" stays a string, true stays a boolean.
# ``patternProperties`` alone would still allow other keys: ``additionalProperties: false``
# says in the schema that every key must match.
_FiniteFloat: TypeAlias = Annotated[StrictFloat, Field(allow_inf_nan=False)]
_KEYS_MATCH = Field(json_schema_extra={"additionalProperties": False})
JsonValue = TypeAliasType(
    "JsonValue",
    "Text | StrictBool | StrictInt | _FiniteFloat | list[JsonValue]"
    " | Annotated[dict[Text, JsonValue], _KEYS_MATCH] | None",
)
Metadata: TypeAlias = Annotated[
    dict[Text, JsonValue], _KEYS_MATCH, WrapValidator(_json_without_control)
]


def text_query(*, max_length: int, min_length: int | None = None, **options: Any) -> Any:
    """``Query(...)`` for a text value: no control character (422), documented as a pattern."""
    return Query(min_length=min_length, max_length=max_length, pattern=PRINTABLE, **options)


def text_path(*, max_length: int, **options: Any) -> Any:
    """``Path(...)`` for a text value (an org id, an event id) under the same rule."""
    return Path(min_length=1, max_length=max_length, pattern=PRINTABLE, **options)


def json_problem(value: Any, where: str = "a value") -> str | None:
    """Where the first key or string holding a control character is in ``value``, or None."""
    if isinstance(value, str):
        return where if _CONTROL.search(value) else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            if (problem := json_problem(item, f"{where} [{index}]")) is not None:
                return problem
    if isinstance(value, dict):
        for key, item in value.items():
            if _CONTROL.search(str(key)):
                return "a key"
            if (problem := json_problem(item, f"the value of {key!r}")) is not None:
                return problem
    return None
