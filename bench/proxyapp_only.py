"""A diagnostic setup: tokenkeep's ``ProxyApp`` alone, with an in-memory token source.

Not one of the issue's setups. It runs the proxy's real per-call code (path validation,
API-key check with its cache, header hygiene, write-pause admission, retry policy, limit
tracking; logging at WARNING like the benchmarked gateway) without the gateway around it
(no dispatcher, no control plane, no refresh coordinator), so the difference between it and
``tokenkeep serve`` is what the gateway adds on the hot path.

uvicorn factory: ``proxyapp_only:create_app`` (upstream from ``BENCH_UPSTREAM``, API key
from ``BENCH_API_KEY``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from tokenkeep.clock import SystemClock
from tokenkeep.config import load_settings
from tokenkeep.observability.logging import configure_logging
from tokenkeep.proxy import FreshToken, ProxyApp
from tokenkeep.proxy.source import ProxiedFailure, Verdict
from tokenkeep.secret import Secret


class _Tokens:
    """A TokenSource that always has a good token (the coordinator's cache-hit path)."""

    def __init__(self, token: FreshToken) -> None:
        self._token = token

    async def token_for(self, connection_id: str) -> FreshToken:
        return self._token

    async def refresh_after_rejection(
        self, connection_id: str, rejected_version: int
    ) -> FreshToken:
        return self._token

    async def settle(self, failure: ProxiedFailure) -> Verdict:
        return Verdict(None)


def create_app() -> Any:
    """The uvicorn factory."""
    configure_logging("json", "WARNING", stream=open(os.devnull, "w"))  # noqa: SIM115
    upstream = os.environ["BENCH_UPSTREAM"]
    api_key = os.environ["BENCH_API_KEY"]
    token = FreshToken("bench", "00Dbx0000000001AAA", upstream, Secret("00Dbx!AQ4AQbench"), 1)

    async def authenticate(key: str) -> bool:
        return key == api_key

    settings = load_settings(
        data_dir=Path(tempfile.gettempdir()) / "tokenkeep-bench-proxyapp",
        allow_insecure_loopback=True,  # the upstream is plain http on 127.0.0.1
    )
    return ProxyApp(_Tokens(token), authenticate, settings, SystemClock())
