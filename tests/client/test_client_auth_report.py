"""Direct mode reports what a refresh could not fix (``POST /connections/{id}/report``).

* The org locks sessions to the IP they came from, and the app calls from another address
  (127.0.0.2) than the gateway's (127.0.0.1): the refresh succeeds, the replay is refused
  again (cause 3).
* The org turns on API Client Control without allow-listing the app: Salesforce answers
  the INVALID_SESSION_ID variant no refresh fixes (cause 4): no renewal, no replay.

Either way the plug-ins tell the gateway what Salesforce answered, the host the call went
to, their local address and the token version, and hand the caller the refusal. The report
is best-effort: a gateway without the route (404) or one that is down changes nothing.

The SDK client runs over a recording transport (the real HTTP transport underneath), so
the tests see the report leave whatever the gateway answers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import requests

from tokenkeep.client import TokenkeepAuth, TokenkeepRequestsAuth
from tokenkeep.testing import GatewayUnderTest

pytestmark = pytest.mark.tokenkeep_gateway(orgs=1, seed=5)

LIMITS = "/services/data/v60.0/limits"


class Recording(httpx.HTTPTransport):
    """The real transport, keeping every ``(method, path, json body, status)``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, Any, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, request.url.path, body, response.status_code))
        return response

    def reports(self) -> list[tuple[Any, int]]:
        return [(b, s) for m, p, b, s in self.seen if m == "POST" and p.endswith("/report")]


class AsyncRecording(httpx.AsyncHTTPTransport):
    """The async twin of :class:`Recording`."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, Any, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, request.url.path, body, response.status_code))
        return response

    def reports(self) -> list[tuple[Any, int]]:
        return [(b, s) for m, p, b, s in self.seen if m == "POST" and p.endswith("/report")]


def _lock_out_the_app(gw: GatewayUnderTest) -> None:
    org = gw.emulator.orgs[0]
    gw.emulator.admin.patch_org(org.org_id, {"api_client_control": True, "allowed_client_ids": []})


def _lock_sessions_to_ip(gw: GatewayUnderTest) -> None:
    gw.emulator.admin.patch_org(gw.emulator.orgs[0].org_id, {"lock_sessions_to_ip": True})


def _check_report(doc: Any, status: int, instance_url: str, *, version: int, address: str) -> None:
    assert doc["status"] == 401
    assert "INVALID_SESSION_ID" in doc["body"]
    assert len(doc["body"]) <= 2048
    assert doc["host"] == instance_url.rstrip("/")
    assert doc["address"] == address
    assert doc["version"] == version
    # Whatever the gateway answered (a diagnosis, or 404 before it has the route), the
    # caller got Salesforce's refusal and no exception.
    assert status in (200, 404)


def _refresh_bodies(recording: Recording | AsyncRecording) -> list[Any]:
    return [b for m, p, b, _ in recording.seen if m == "POST" and p.endswith("/refresh")]


async def test_httpx_auth_reports_a_replay_refused_again(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    instance_url = (await gw.connect("acme")).instance_url
    recording = Recording()
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")
    with (
        gw.client(transport=recording) as tk,
        httpx.Client(
            base_url=instance_url, auth=TokenkeepAuth(tk, "acme"), transport=elsewhere
        ) as sf,
    ):
        assert (await asyncio.to_thread(sf.get, LIMITS)).status_code == 200
        assert recording.reports() == []
        _lock_sessions_to_ip(gw)
        refused = await asyncio.to_thread(sf.get, LIMITS)
    assert refused.status_code == 401
    assert refused.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    assert gw.grants("refresh_token") == 1  # renewed once, replayed once, then reported
    assert _refresh_bodies(recording) == [{"rejected_version": 1}]
    [(doc, status)] = recording.reports()
    _check_report(doc, status, instance_url, version=2, address="127.0.0.2")


async def test_async_httpx_auth_reports_a_session_no_refresh_fixes(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    instance_url = (await gw.connect("acme")).instance_url
    recording = AsyncRecording()
    async with (
        gw.async_client(transport=recording) as tk,
        httpx.AsyncClient(base_url=instance_url, auth=TokenkeepAuth(tk, "acme")) as sf,
    ):
        assert (await sf.get(LIMITS)).status_code == 200
        _lock_out_the_app(gw)
        refused = await sf.get(LIMITS)
    assert refused.status_code == 401
    assert gw.grants("refresh_token") == 0  # a refresh would not help: none was asked for
    assert _refresh_bodies(recording) == []
    [(doc, status)] = recording.reports()
    _check_report(doc, status, instance_url, version=1, address="127.0.0.1")


class _FromAddress(requests.adapters.HTTPAdapter):
    """Connections that leave from ``address`` (as a second worker host would)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


async def test_requests_auth_reports_a_replay_refused_again(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    gw = tokenkeep_gateway
    instance_url = (await gw.connect("acme")).instance_url
    recording = Recording()
    tk = gw.client(transport=recording)
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", _FromAddress("127.0.0.2"))
    session.auth = TokenkeepRequestsAuth(tk, "acme")
    try:
        url = instance_url.rstrip("/") + LIMITS
        assert (await asyncio.to_thread(session.get, url, timeout=30)).status_code == 200
        _lock_sessions_to_ip(gw)
        refused = await asyncio.to_thread(session.get, url, timeout=30)
    finally:
        session.close()
        tk.close()
    assert refused.status_code == 401
    assert [r.status_code for r in refused.history] == [401]
    assert gw.grants("refresh_token") == 1
    [(doc, status)] = recording.reports()
    _check_report(doc, status, instance_url, version=2, address="127.0.0.2")


async def test_a_gateway_that_cannot_take_the_report_changes_nothing(
    tokenkeep_gateway: GatewayUnderTest,
) -> None:
    """The report fails at the transport (the gateway went away between the renewal and
    the report): the caller still gets Salesforce's answer, not an exception."""
    gw = tokenkeep_gateway
    instance_url = (await gw.connect("acme")).instance_url

    class DropsReports(Recording):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/report"):
                raise httpx.ConnectError("gateway gone", request=request)
            return super().handle_request(request)

    with (
        gw.client(transport=DropsReports()) as tk,
        httpx.Client(base_url=instance_url, auth=TokenkeepAuth(tk, "acme")) as sf,
    ):
        assert (await asyncio.to_thread(sf.get, LIMITS)).status_code == 200
        _lock_out_the_app(gw)
        refused = await asyncio.to_thread(sf.get, LIMITS)
    assert refused.status_code == 401
