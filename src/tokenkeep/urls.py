"""Where tokenkeep may send credentials: https only, loopback http only when allowed.

The one checker, shared by the control API (:mod:`tokenkeep.api.urls`, 422 on store), the
proxy (before each upstream call) and the lifecycle (an ``instance_url`` a token endpoint
sends). It lives outside ``api``/``proxy``/``lifecycle`` so that none of them imports
another's package just for it (``proxy -> api -> lifecycle -> proxy`` was an import cycle).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tokenkeep.config import is_loopback_url

__all__ = ["upstream_url_problem"]


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
