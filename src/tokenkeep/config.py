"""Settings from ``TOKENKEEP_*`` environment variables (pydantic-settings), loaded once.

Invalid settings stop start-up with one sentence that names the variable
(:func:`load_settings` raises :class:`~tokenkeep.errors.ConfigError`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokenkeep.errors import ConfigError

__all__ = [
    "Settings",
    "get_settings",
    "is_loopback_url",
    "load_settings",
    "split_list",
    "webhook_secret_bytes",
]


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("tokenkeep", appauthor=False))


class Settings(BaseSettings):
    """Every knob of the gateway. Field names map to ``TOKENKEEP_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENKEEP_", extra="ignore", case_sensitive=False, validate_default=True
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    # May carry a password (postgresql://user:password@host/db): kept out of repr().
    database_url: str | None = Field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=1, le=65535)
    public_url: str | None = None
    secret_key: SecretStr | None = None
    encryption_keys: SecretStr | None = None
    log_format: Literal["json", "console"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    allow_insecure_loopback: bool = False
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    db_pool_size: int = Field(default=10, ge=1)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    # Lifecycle (refresh coordinator, scheduler) and proxy knobs.
    refresh_lease_seconds: float = Field(default=30.0, gt=0)
    refresh_max_attempts: int = Field(default=5, ge=1)
    refresh_margin_seconds: float = Field(default=300.0, ge=0)
    # How long a token answer whose commit failed (database away) is retried under the
    # lease before the flight gives up; the journal in the data dir keeps it meanwhile.
    commit_retry_seconds: float = Field(default=900.0, ge=0)
    # A learned (shorter) org session timeout grows back one step per this many seconds.
    learned_timeout_regrow_seconds: float = Field(default=86_400.0, gt=0)
    scheduler_enabled: bool = True
    scheduler_interval_seconds: float = Field(default=5.0, gt=0)
    scheduler_batch_size: int = Field(default=100, ge=1)
    # Token calls one scheduler runs at once (each holds a lease and a database connection).
    scheduler_concurrency: int = Field(default=8, ge=1, le=64)
    upstream_timeout_seconds: float = Field(default=60.0, gt=0)
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    retry_buffer_bytes: int = Field(default=1_048_576, ge=0)
    ca_bundle: Path | None = None
    egress_address: str | None = None
    # The proxy's upstream HTTP client (proxy/upstream.py): aiohttp, or pyreqwest (Rust).
    upstream_client: Literal["aiohttp", "pyreqwest"] = "aiohttp"
    # Webhooks (events/): an endpoint from the environment (besides POST /webhooks), the
    # delivery worker, its HTTP timeout and how long a delivery is retried.
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhooks_enabled: bool = True
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_age_seconds: float = Field(default=259_200.0, gt=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_batch_size: int = Field(default=50, ge=1)
    webhook_backoff_base_seconds: float = Field(default=5.0, gt=0)
    webhook_backoff_cap_seconds: float = Field(default=3_600.0, gt=0)
    write_pause_probe_seconds: float = Field(default=30.0, gt=0)
    # How often each process re-checks the API keys it has cached (a revoked or deleted key
    # is refused everywhere within about this long; store/api_key_cache.py).
    api_key_recheck_seconds: float = Field(default=0.5, gt=0, le=5)
    # How often a gateway re-measures its clock against PostgreSQL's (store/clock_sync.py).
    clock_sync_seconds: float = Field(default=60.0, gt=0)
    # Org health (orgs/): how often each gateway re-reads the shared write pauses, flushes
    # its call counts, and the session-error spike rule.
    write_pause_poll_seconds: float = Field(default=0.5, gt=0, le=5)
    org_health_flush_seconds: float = Field(default=1.0, gt=0)
    org_health_bucket_seconds: int = Field(default=10, ge=1, le=3600)
    org_health_retention_seconds: int = Field(default=86_400, ge=600)
    spike_min_errors: int = Field(default=5, ge=1)
    spike_min_ratio: float = Field(default=0.2, gt=0, le=1)
    spike_window_seconds: int = Field(default=300, ge=10)
    connect_session_ttl_seconds: int = Field(default=900, ge=30)
    # Where a finished connect flow may send the browser (``return_url``): comma-separated
    # origins or URL prefixes. None: only this gateway's own origin (``base_url``).
    connect_return_urls: str | None = None
    # Connecting the same org + user again updates that connection instead of adding one.
    connect_update_existing: bool = True
    # The operation log (observability/oplog.py) and metrics (observability/metrics.py).
    operation_log: bool = True  # TOKENKEEP_OPERATION_LOG=0: no entry kept (a benchmark's baseline)
    log_query: bool = False  # keep proxied calls' query strings in the log (may hold data)
    log_retention_days: int = Field(default=30, ge=1, le=3650)
    log_queue_size: int = Field(default=10_000, ge=100)
    log_flush_seconds: float = Field(default=0.25, gt=0, le=10)
    log_prune_interval_seconds: float = Field(default=3600.0, gt=0)
    log_prune_batch: int = Field(default=5000, ge=100)
    metrics_org_label: bool = False

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0]
        if scheme in {"postgresql", "postgres"}:
            # One driver family: psycopg 3 (sync and async).
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if scheme not in {"sqlite", "sqlite+aiosqlite", "postgresql+psycopg"}:
            raise ValueError(
                "must start with sqlite:/// or postgresql+psycopg:// "
                f"(got a URL with scheme {scheme!r})"
            )
        if scheme == "sqlite":
            return "sqlite+aiosqlite://" + value.split("://", 1)[1]
        return value

    @field_validator("egress_address")
    @classmethod
    def _check_egress(cls, value: str | None) -> str | None:
        if value:
            ipaddress.ip_address(value)
        return value or None

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("connect_return_urls")
    @classmethod
    def _check_return_urls(cls, value: str | None) -> str | None:
        for entry in split_list(value):
            parts = urlsplit(entry)
            if (
                parts.scheme not in {"http", "https"}
                or not parts.hostname
                or "@" in parts.netloc
                or parts.query
                or parts.fragment
            ):
                raise ValueError(
                    f"{entry!r} is not an origin or URL prefix (https://app.example.com or "
                    "https://app.example.com/connected/)"
                )
        return value or None

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        text = value.get_secret_value() if value is not None else ""
        if not text:
            if info.data.get("webhook_url"):
                raise ValueError(
                    "must be set when TOKENKEEP_WEBHOOK_URL is set (whsec_ followed by the "
                    "base64 of 24 to 64 random bytes)"
                )
            return None
        if webhook_secret_bytes(text) is None:
            raise ValueError(
                "must be a Standard Webhooks secret: whsec_ followed by the base64 of 24 to 64 "
                "random bytes"
            )
        return value

    @model_validator(mode="after")
    def _fill_database_url(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'tokenkeep.db'}"
        return self

    @property
    def db_url(self) -> str:
        """The database URL (the validator fills the SQLite default, so it is never empty)."""
        if self.database_url is None:  # only a Settings built with validation bypassed
            raise ConfigError("TOKENKEEP_DATABASE_URL is not set.")
        return self.database_url

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def return_url_prefixes(self) -> list[str]:
        """Where ``return_url`` may point: the setting's entries, or this gateway's origin."""
        entries = split_list(self.connect_return_urls)
        if entries:
            return entries
        parts = urlsplit(self.base_url)
        return [f"{parts.scheme}://{parts.netloc}/"]

    @property
    def base_url(self) -> str:
        """Where users' browsers reach this gateway (connect flow links)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"


def split_list(value: str | None) -> list[str]:
    """The non-empty, stripped items of a comma-separated setting."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def is_loopback_url(url: str) -> bool:
    """True for ``http(s)://127.x.y.z[:port]``, ``localhost`` or ``[::1]``."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_secret_bytes(text: str) -> bytes | None:
    """The key of a ``whsec_<base64>`` Standard Webhooks secret (24 to 64 bytes), else None."""
    if not text.startswith("whsec_"):
        return None
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if 24 <= len(key) <= 64 else None


def load_settings(**overrides: object) -> Settings:
    """Read the environment (plus ``overrides``) or raise one clear :class:`ConfigError`."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"TOKENKEEP_{field.upper()} is invalid: {msg}.") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
