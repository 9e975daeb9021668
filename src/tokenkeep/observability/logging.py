"""structlog set-up: JSON or console output, and a redaction processor.

The redaction processor masks any field whose *name* looks like a credential (token,
secret, password, assertion, authorization, cookie, ...) and any *value* that looks like
one (a Salesforce session id ``00D...!...``, a Salesforce refresh token ``5Aep...``, a
``Bearer`` header, a JWT, a ``tk_`` key, a PEM private key, the password of a URL's
``user:password@``, the value of a ``password=``, ``client_secret=``, ``refresh_token=``,
``access_token=``, ``code=`` or ``assertion=`` pair in free text), at any depth, in one
compiled regex pass per string. It runs last before rendering, so nothing a developer logs
by mistake can reach the output.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import structlog

from tokenkeep.secret import Secret

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact", "redact_processor"]

REDACTED = "***"

_SECRET_NAME = re.compile(
    r"(token|secret|passw|assertion|authorization|cookie|api_?key|private_?key|"
    r"credential|session_?id|signature|code_verifier|sfdc_session|^code$)",
    re.IGNORECASE,
)
# Names that contain a secret-looking word but hold no secret.
_SAFE_NAMES = frozenset(
    {
        "has_refresh_token",
        "refresh_token_fingerprint",
        "token_type",
        "token_type_hint",
        "token_fingerprint",
        "grant_type",
    }
)
# Free-text ``name=value`` pairs whose value is a credential (form bodies, query strings,
# exception messages quoting a URL): the match starts at ``=`` and a fixed-width
# look-behind per name checks what precedes it.
_PAIR_NAMES = ("password", "client_secret", "refresh_token", "access_token", "code", "assertion")
_PAIR_VALUE = (
    "=(?:"
    + "|".join(rf"(?<=\b{name}=)|(?<=\b{name.upper()}=)" for name in _PAIR_NAMES)
    + r")[^&\s\"'<>,;]+"
)
# Speed: every alternative starts with a literal character, so the regex engine skips ahead
# to candidate positions (a word boundary is written as a look-behind AFTER the literal: a
# leading \b would disable that skip and cost ~2.5x per log line, measured). Lines without a
# secret cost what they did with the five original patterns (~4 us per proxy line).
_SECRET_VALUE = re.compile(
    r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]{10,}"  # Salesforce session/access token
    r"|5Aep(?<!\w5Aep)[A-Za-z0-9._\-]{40,}"  # Salesforce refresh token (5Aep861...)
    r"|[Bb]earer(?<!\w[Bb]earer)\s+[A-Za-z0-9._~+/!\-]{8,}=*"  # Authorization header
    r"|eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*"  # JWT
    r"|tk_(?<!\wtk_)[A-Za-z0-9_\-]{16,}"  # tokenkeep API key
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
    r"|://[^/\s:@]{0,256}:[^/\s@]{1,256}@"  # URL userinfo user:password@
    rf"|{_PAIR_VALUE}"
)


def _mask(match: re.Match[str]) -> str:
    # The URL and pair alternatives keep their delimiters; the others are the secret itself.
    first = match.group()[0]
    if first == "=":
        return "=" + REDACTED
    if first == ":":
        return "://" + REDACTED + "@"
    return REDACTED


_PLAIN = frozenset({int, float, bool})


def _redact_value(value: Any, depth: int = 0) -> Any:
    if depth > 6 or value is None or type(value) in _PLAIN:
        return value  # fast path: the ABC checks below cost more than the whole rest
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, str):
        return _SECRET_VALUE.sub(_mask, value) if value else value
    if isinstance(value, Mapping):
        return {k: _redact_item(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(v, depth + 1) for v in value]
    if isinstance(value, bytes):
        return _redact_value(value.decode("utf-8", "replace"), depth + 1)
    if isinstance(value, BaseException):
        return _redact_value(str(value), depth + 1)
    return value


@functools.lru_cache(maxsize=4096)
def _is_secret_name(name: str) -> bool:
    # Field names repeat on every log line (the proxy logs one per call): check each once.
    return name not in _SAFE_NAMES and _SECRET_NAME.search(name) is not None


def _redact_item(name: str, value: Any, depth: int) -> Any:
    if _is_secret_name(name) and value not in (None, "", False):
        if isinstance(value, bool | int | float):
            return value
        return REDACTED
    return _redact_value(value, depth)


def redact(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` with every secret-looking name or value masked."""
    return {k: _redact_item(k, v, 0) for k, v in event.items()}


def redact_processor(_logger: Any, _method: str, event_dict: Any) -> Any:
    """structlog processor form of :func:`redact` (also redacts rendered exceptions)."""
    return redact(event_dict)


def configure_logging(
    fmt: str = "console", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library's logging through the redactor."""
    stream = stream or sys.stderr
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Standard-library loggers (uvicorn, sqlalchemy, alembic) get the same treatment.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A bound structlog logger."""
    return structlog.get_logger(name, **initial)
