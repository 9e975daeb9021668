"""The provider catalog: ``providers.yaml`` shipped in the package, loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import yaml

from tokenkeep.errors import ConfigError, NotFoundError

__all__ = ["Provider", "get_provider", "load_catalog"]


@dataclass(frozen=True, slots=True)
class Provider:
    """One provider entry of ``providers.yaml``."""

    name: str
    display_name: str
    authorize_path: str
    token_path: str
    revoke_path: str
    introspect_path: str
    userinfo_path: str
    default_scopes: tuple[str, ...]
    login_urls: dict[str, str]
    default_session_timeout_seconds: int
    jwt_audiences: dict[str, str]
    session_timeout_ladder: tuple[int, ...]
    #: A cheap authenticated data call (joined to the instance URL) the diagnosis probes with.
    probe_path: str = "/"

    def is_login_host(self, url: str) -> bool:
        """True when ``url`` is one of the shared login hosts (not an org's My Domain)."""
        host = (urlsplit(url).hostname or "").lower()
        return any(host == (urlsplit(u).hostname or "") for u in self.login_urls.values())

    def jwt_audience(self, login_url: str) -> str:
        """The ``aud`` claim for a JWT bearer assertion sent to ``login_url``.

        A shared login host is its own audience; a My Domain maps to its login host (sandbox
        or production) by suffix; anything else (an emulator, a private endpoint) is used as
        is, without a trailing slash.
        """
        login_url = login_url.rstrip("/")
        if self.is_login_host(login_url):
            return login_url
        host = (urlsplit(login_url).hostname or "").lower()
        for suffix, audience in self.jwt_audiences.items():
            if host.endswith(suffix):
                return audience
        return login_url


def _provider(name: str, entry: dict[str, Any]) -> Provider:
    try:
        return Provider(
            name=name,
            display_name=str(entry.get("display_name", name)),
            authorize_path=str(entry["authorize_path"]),
            token_path=str(entry["token_path"]),
            revoke_path=str(entry["revoke_path"]),
            introspect_path=str(entry["introspect_path"]),
            userinfo_path=str(entry["userinfo_path"]),
            default_scopes=tuple(entry.get("default_scopes", ())),
            login_urls={str(k): str(v).rstrip("/") for k, v in entry["login_urls"].items()},
            default_session_timeout_seconds=int(entry.get("default_session_timeout_seconds", 7200)),
            jwt_audiences={str(k): str(v) for k, v in entry.get("jwt_audiences", {}).items()},
            session_timeout_ladder=tuple(
                sorted(int(s) for s in entry.get("session_timeout_ladder", ()))
            ),
            probe_path=str(entry.get("probe_path", "/")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"providers.yaml: entry {name!r} is invalid ({exc})") from None


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, Provider]:
    """Every provider of the shipped catalog, by name."""
    text = resources.files("tokenkeep.providers").joinpath("providers.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError("providers.yaml must be a mapping of provider name to entry")
    return {str(name): _provider(str(name), entry) for name, entry in data.items()}


def get_provider(name: str) -> Provider:
    """The catalog entry for ``name`` or :class:`NotFoundError`."""
    try:
        return load_catalog()[name]
    except KeyError:
        raise NotFoundError(f"unknown provider {name!r}") from None
