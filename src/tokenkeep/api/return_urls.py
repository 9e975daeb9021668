"""Where a finished connect flow may send the browser: ``return_url`` and its allow-list.

An unchecked ``return_url`` is an open redirect (a phishing page reached through the
gateway's own link) and, with a CR/LF in it, a header-injection attempt on the 302. So a
``return_url`` must be an absolute http(s) URL without control characters, spaces,
backslashes or user info, on an entry of ``TOKENKEEP_CONNECT_RETURN_URLS`` (an origin, or
a URL prefix); without that setting, only the gateway's own origin. The rule is checked
when the session is created (422) and again before the callback redirects (a session
stored before the setting changed goes to the plain success page instead).
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote, urlsplit

from tokenkeep.api.inputs import PATTERN_SENTENCES, RETURN_URL_PATTERN
from tokenkeep.config import Settings

__all__ = ["RETURN_URL_PATTERN", "return_url_problem"]

_SHAPE = re.compile(RETURN_URL_PATTERN)
_DEFAULT_PORTS = {"http": 80, "https": 443}

_SETTING = "TOKENKEEP_CONNECT_RETURN_URLS"


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port out of range or not a number
        return None


def _under(candidate: SplitResult, prefix: str) -> bool:
    allowed = urlsplit(prefix)
    if (
        candidate.scheme != allowed.scheme
        or (candidate.hostname or "") != (allowed.hostname or "").lower()
        or _port(candidate) is None
        or _port(candidate) != _port(allowed)
    ):
        return False
    base = allowed.path or "/"
    path = candidate.path or "/"
    if any(segment in {".", ".."} for segment in unquote(path).split("/")):
        return False  # a browser resolves "/connected/../admin" out of the prefix
    # "/app" allows "/app" and "/app/...", never "/apple".
    return path == base or path.startswith(base if base.endswith("/") else base + "/")


def return_url_problem(url: str, settings: Settings) -> str | None:
    """Why the browser may not be sent to ``url`` (a sentence), or None when it may."""
    if not _SHAPE.fullmatch(url):  # fullmatch: "$" alone would let a final "\n" through
        return f"return_url {PATTERN_SENTENCES[RETURN_URL_PATTERN]}"
    candidate = urlsplit(url)
    if any(_under(candidate, prefix) for prefix in settings.return_url_prefixes):
        return None
    return (
        f"return_url {candidate.scheme}://{candidate.netloc}{candidate.path} is not allowed: "
        f"add its origin or a prefix of it to {_SETTING} (comma-separated; without it only "
        "the gateway's own pages are allowed)"
    )
