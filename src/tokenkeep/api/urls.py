"""Where tokenkeep may send credentials: https only, loopback http only when allowed."""

from __future__ import annotations

from urllib.parse import urlsplit

from tokenkeep.config import Settings, is_loopback_url
from tokenkeep.errors import ValidationError

__all__ = ["check_upstream_url"]


def check_upstream_url(url: str, field: str, settings: Settings) -> None:
    """Raise 422 ``validation_error`` unless ``url`` may receive tokens.

    Plain http would put tokens on the wire in clear; it is accepted only for loopback
    addresses (the emulator, local tests) and only with ``TOKENKEEP_ALLOW_INSECURE_LOOPBACK``.
    """
    scheme = urlsplit(url).scheme
    if scheme == "https":
        return
    if scheme == "http" and is_loopback_url(url) and settings.allow_insecure_loopback:
        return
    hint = (
        " (http is accepted only for loopback addresses with "
        "TOKENKEEP_ALLOW_INSECURE_LOOPBACK=true)"
    )
    raise ValidationError(f"{field}: must be an https:// URL{hint}.")
