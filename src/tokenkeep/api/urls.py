"""Where tokenkeep may send credentials: https only, loopback http only when allowed.

The control API refuses such URLs when they are stored (:func:`check_upstream_url`, 422),
and the proxy refuses them again before each upstream call, so a row written before a
setting changed, or by hand, cannot send a token in clear. The pure check is
:func:`tokenkeep.urls.upstream_url_problem` (re-exported here).
"""

from __future__ import annotations

from tokenkeep.config import Settings
from tokenkeep.errors import ValidationError
from tokenkeep.urls import upstream_url_problem

__all__ = ["check_upstream_url", "upstream_url_problem"]


def check_upstream_url(url: str, field: str, settings: Settings) -> None:
    """Raise 422 ``validation_error`` unless ``url`` may receive tokens."""
    problem = upstream_url_problem(url, allow_insecure_loopback=settings.allow_insecure_loopback)
    if problem is not None:
        raise ValidationError(f"{field}: {problem}.")
