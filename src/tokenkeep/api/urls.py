"""Where tokenkeep may send credentials: https only, loopback http only when allowed.

The one checker: the control API refuses such URLs when they are stored
(:func:`check_upstream_url`, 422), and the proxy refuses them again before each upstream
call (:func:`upstream_url_problem`), so a row written before a setting changed, or by
hand, cannot send a token in clear.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tokenkeep.config import Settings, is_loopback_url
from tokenkeep.errors import ValidationError

__all__ = ["check_upstream_url", "upstream_url_problem"]


def upstream_url_problem(url: str, *, allow_insecure_loopback: bool) -> str | None:
    """Why ``url`` may not receive tokens (a sentence), or None when it may.

    Plain http would put tokens on the wire in clear; it is accepted only for loopback
    addresses (the emulator, local tests) and only with ``TOKENKEEP_ALLOW_INSECURE_LOOPBACK``.
    """
    scheme = urlsplit(url).scheme
    if scheme == "https":
        return None
    if scheme == "http" and allow_insecure_loopback and is_loopback_url(url):
        return None
    return (
        "must be an https:// URL (http is accepted only for loopback addresses with "
        "TOKENKEEP_ALLOW_INSECURE_LOOPBACK=true)"
    )


def check_upstream_url(url: str, field: str, settings: Settings) -> None:
    """Raise 422 ``validation_error`` unless ``url`` may receive tokens."""
    problem = upstream_url_problem(url, allow_insecure_loopback=settings.allow_insecure_loopback)
    if problem is not None:
        raise ValidationError(f"{field}: {problem}.")
