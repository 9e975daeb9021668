"""The emulator's real tokens through every flow: they appear only where they must.

tests/test_canary.py imports canary values that look like nothing; this test uses the
tokens the emulator really issues (``00D...!AQ...`` access tokens, ``5Aep861...`` refresh
tokens) through the connect flow, an import, the proxy (with a dead session: refresh and
replay), a forced refresh, ``GET /connections/{id}/token``, the listings and ``GET /logs``.
Every log line (JSON, DEBUG) and every answer is then scanned for every token the emulator
ever issued: only the bodies of ``GET /connections/{id}/token`` and
``POST /connections/{id}/refresh`` may carry one.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
import structlog

from tokenkeep.observability.logging import configure_logging
from tokenkeep.testing import GatewayUnderTest

LIMITS = "/services/data/v60.0/limits"
ACCOUNTS = "/services/data/v60.0/sobjects/Account"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "DEBUG", stream=stream)  # DEBUG: the most is logged there
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = []
    logging.getLogger().setLevel(logging.WARNING)


def _issued_tokens(gw: GatewayUnderTest) -> set[str]:
    state = gw.emulator.state
    return set(state.access) | set(state.refresh_index)


async def test_issued_tokens_appear_only_in_token_answers(
    log_stream: io.StringIO, tokenkeep_gateway: GatewayUnderTest
) -> None:
    gw = tokenkeep_gateway
    may_carry: list[httpx.Response] = []  # token and refresh answers: bodies may hold one
    others: list[httpx.Response] = []
    auth = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=auth, timeout=60) as api:
        await gw.connect("acme")  # the hosted connect flow, with a headless browser
        await gw.connect("globex", org=1, via="import")
        others.extend([await api.get(p) for p in ("/c/acme" + LIMITS, "/c/globex" + LIMITS)])
        others.append(
            await api.post(
                "/proxy" + ACCOUNTS, json={"Name": "x"}, headers={"Connection-Id": "acme"}
            )
        )
        gw.expire_sessions()  # dead sessions: the next proxied call refreshes and replays
        others.append(await api.get("/c/acme" + LIMITS))
        may_carry.append(await api.post("/connections/globex/refresh"))
        may_carry.append(await api.get("/connections/acme/token"))
        reads = (
            "/connections",
            "/connections/acme",
            "/integrations",
            "/logs",
            "/c/globex" + LIMITS,
            "/connections/nope/token",
        )
        others.extend([await api.get(path) for path in reads])

    assert [r.status_code for r in may_carry] == [200, 200]
    assert [r.status_code for r in others[:5]] == [200, 200, 201, 200, 200]
    assert gw.grants("refresh_token") >= 2  # the proxy's and the forced refresh
    tokens = _issued_tokens(gw)
    assert any(t.startswith("5Aep") for t in tokens)
    assert any("!AQ" in t for t in tokens)
    assert any(t in r.text for r in may_carry for t in tokens)  # the scan can see them

    logs = log_stream.getvalue()
    assert '"event": "proxy.call"' in logs  # the log was really captured
    assert '"event": "request"' in logs
    assert '"event": "oauth.request"' in logs  # token-endpoint calls (code, refresh)
    for token in tokens:
        assert token not in logs, f"an issued token ({token[:8]}...) is in the log"
        for response in others:
            where = f"{response.request.method} {response.request.url.path}"
            assert token not in response.text, f"an issued token is in the body of {where}"
        for response in [*others, *may_carry]:
            where = f"{response.request.method} {response.request.url.path}"
            headers = json.dumps(list(response.headers.multi_items()))
            assert token not in headers, f"an issued token is in the headers of {where}"
