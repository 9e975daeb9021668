"""TokenEndpointClient's edges against a tiny local server serving recorded answers.

The emulator tests cover the happy paths and Salesforce's refusals; these cover what a real
network and a misbehaving server do (429, HTML, broken JSON, tampered signatures, refused
connections) and what the client sends.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tokenkeep.clock import ManualClock
from tokenkeep.oauth import (
    IntegrationConfigError,
    OAuthApp,
    OAuthError,
    TokenEndpointClient,
    TokenSignatureError,
    UpstreamTransportError,
)
from tokenkeep.providers.salesforce import compute_signature
from tokenkeep.secret import Secret

CANARY_ACCESS = "00D5g000004XXXX!AQ8AQcanaryAccessTokenValue0123"
CANARY_REFRESH = "5Aep861canaryRefreshTokenValue0123456789"
SECRET = "canary-client-secret-0123456789"
ID_PATH = "/id/00D5g000004XXXXEAA/0055g00000AAAAAAA2"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recorded:
    """A one-route server: ``answer`` is swapped per test; requests are kept."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.answer: Handler = self.ok
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.forms.append(dict(await request.post()) if request.method == "POST" else {})  # type: ignore[arg-type]
        self.headers.append(dict(request.headers))
        return await self.answer(request)

    async def ok(self, request: web.Request) -> web.StreamResponse:
        id_url = self.url + ID_PATH
        issued_at = "1700000000000"
        return web.json_response(
            {
                "access_token": CANARY_ACCESS,
                "refresh_token": CANARY_REFRESH,
                "instance_url": self.url,
                "id": id_url,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": compute_signature(SECRET, id_url, issued_at),
                "scope": "api refresh_token",
            }
        )


@pytest.fixture
async def server() -> AsyncIterator[Recorded]:
    rec = Recorded()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[TokenEndpointClient]:
    async with aiohttp.ClientSession() as session:
        yield TokenEndpointClient(session, clock=ManualClock(1_800_000_000))


def app_for(url: str, **kw: Any) -> OAuthApp:
    return OAuthApp(client_id="3MVG9test", client_secret=Secret(SECRET), login_url=url, **kw)


async def test_refresh_sends_the_salesforce_form_and_parses(
    server: Recorded, client: TokenEndpointClient
) -> None:
    tr = await client.refresh(app_for(server.url + "/"), Secret(CANARY_REFRESH))
    assert server.forms == [
        {
            "grant_type": "refresh_token",
            "refresh_token": CANARY_REFRESH,
            "client_id": "3MVG9test",
            "client_secret": SECRET,
        }
    ]
    assert tr.received_at == 1_800_000_000  # our clock, not issued_at
    assert tr.issued_at_ms == 1_700_000_000_000
    assert tr.signature_verified
    assert tr.org_id == "00D5g000004XXXXEAA"


async def test_code_exchange_sends_verifier_and_redirect(
    server: Recorded, client: TokenEndpointClient
) -> None:
    await client.exchange_code(app_for(server.url), "code-1", "https://gw/cb", "verifier-1")
    form = server.forms[0]
    assert form["grant_type"] == "authorization_code"
    assert (form["code"], form["redirect_uri"], form["code_verifier"]) == (
        "code-1",
        "https://gw/cb",
        "verifier-1",
    )


async def test_tampered_signature_is_refused(server: Recorded, client: TokenEndpointClient) -> None:
    async def tampered(request: web.Request) -> web.StreamResponse:
        body = json.loads((await server.ok(request)).body)  # type: ignore[attr-defined]
        body["id"] = server.url + "/id/00D5g000004YYYYEAA/0055g00000AAAAAAA2"
        return web.json_response(body)

    server.answer = tampered
    with pytest.raises(TokenSignatureError):
        await client.exchange_code(app_for(server.url), "code-1", "https://gw/cb")
    # A refresh answer is kept (it may hold the only live, rotated refresh token), flagged.
    kept = await client.refresh(app_for(server.url), Secret(CANARY_REFRESH))
    assert kept.signature_mismatch
    assert not kept.signature_verified


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [(503, {}, None), (500, {}, None), (429, {"Retry-After": "17"}, 17.0), (502, {}, None)],
)
async def test_5xx_and_429_are_transport_errors(
    server: Recorded,
    client: TokenEndpointClient,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    async def failing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="<html>down</html>", headers=headers)

    server.answer = failing
    with pytest.raises(UpstreamTransportError) as info:
        await client.refresh(app_for(server.url), Secret(CANARY_REFRESH))
    assert (info.value.kind, info.value.status) == ("http_status", status)
    assert info.value.retry_after == retry_after


async def test_a_200_that_is_not_json_is_a_bad_response(
    server: Recorded, client: TokenEndpointClient
) -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>captive portal</html>", content_type="text/html")

    server.answer = html
    with pytest.raises(UpstreamTransportError) as info:
        await client.refresh(app_for(server.url), Secret(CANARY_REFRESH))
    assert info.value.kind == "bad_response"


async def test_unusable_answers_are_mapped_once_at_the_client_edge(
    server: Recorded, client: TokenEndpointClient
) -> None:
    async def no_token(request: web.Request) -> web.StreamResponse:
        return web.json_response({"instance_url": server.url, "token_type": "Bearer"})

    server.answer = no_token
    with pytest.raises(UpstreamTransportError) as info:
        await client.refresh(app_for(server.url), Secret(CANARY_REFRESH))
    assert (info.value.kind, info.value.status, info.value.endpoint) == (
        "bad_response",
        200,
        "token",
    )
    assert info.value.message == (
        "token endpoint answered 200 without access_token or instance_url"
    )

    async def no_ids(request: web.Request) -> web.StreamResponse:
        return web.json_response({"username": "ann@acme.com"})

    server.answer = no_ids
    with pytest.raises(UpstreamTransportError) as info:
        await client.userinfo(app_for(server.url), Secret(CANARY_ACCESS))
    assert (info.value.kind, info.value.status, info.value.endpoint) == (
        "bad_response",
        200,
        None,
    )
    assert info.value.retry_after is None


async def test_an_html_400_becomes_an_oauth_error_without_the_body(
    server: Recorded, client: TokenEndpointClient
) -> None:
    async def html(request: web.Request) -> web.StreamResponse:
        return web.Response(status=400, text=f"<html>{CANARY_ACCESS}</html>")

    server.answer = html
    with pytest.raises(OAuthError) as info:
        await client.refresh(app_for(server.url), Secret(CANARY_REFRESH))
    assert (info.value.status, info.value.error) == (400, "http_400")
    assert "canary" not in str(info.value)


async def test_refused_connection_is_a_transport_error(client: TokenEndpointClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(UpstreamTransportError) as info:
        await client.refresh(app_for(f"http://127.0.0.1:{port}"), Secret(CANARY_REFRESH))
    assert info.value.kind == "connection"


async def test_jwt_bearer_sends_no_client_secret(
    server: Recorded, client: TokenEndpointClient
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    app = app_for(server.url, auth_mode="jwt_bearer", private_key=Secret(pem), username="a@b.c")
    await client.jwt_bearer(app)
    form = server.forms[0]
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert form["assertion"].count(".") == 2
    assert "client_secret" not in form


async def test_no_token_in_errors_reprs_or_logs(
    server: Recorded, client: TokenEndpointClient
) -> None:
    app = app_for(server.url)
    with capture_logs() as logs:
        tr = await client.refresh(app, Secret(CANARY_REFRESH))

        async def refusal(request: web.Request) -> web.StreamResponse:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "expired access/refresh token"},
                status=400,
            )

        server.answer = refusal
        with pytest.raises(OAuthError) as info:
            await client.refresh(app, Secret(CANARY_REFRESH))
    text = " ".join(
        [repr(tr), str(tr), repr(app), str(info.value), repr(info.value), repr(logs), repr(client)]
    )
    assert info.value.to_dict()["error"]["details"]["error"] == "invalid_grant"
    for secret in (CANARY_ACCESS, CANARY_REFRESH, SECRET, "canary"):
        assert secret not in text
    assert logs  # the request was logged, just without secrets


async def test_authorize_url_shape(client: TokenEndpointClient) -> None:
    app = app_for("https://acme.my.salesforce.com/", scopes=("api", "refresh_token", "openid"))
    url = client.authorize_url(
        app,
        state="s1",
        code_challenge="c1",
        redirect_uri="https://gw/oauth/callback",
        prompt="login consent",
    )
    assert url == (
        "https://acme.my.salesforce.com/services/oauth2/authorize?response_type=code"
        "&client_id=3MVG9test&redirect_uri=https%3A%2F%2Fgw%2Foauth%2Fcallback&state=s1"
        "&code_challenge=c1&code_challenge_method=S256&scope=api+refresh_token+openid"
        "&prompt=login+consent"
    )


async def test_obtain_dispatches_by_auth_mode_and_needs_a_refresh_token(
    server: Recorded, client: TokenEndpointClient
) -> None:
    app = app_for(server.url)
    with pytest.raises(IntegrationConfigError) as info:
        await client.obtain(app, None)
    assert info.value.error == "no_refresh_token"
    assert server.forms == []  # nothing was sent
    await client.obtain(app, Secret(CANARY_REFRESH))
    cc = app_for(server.url, auth_mode="client_credentials")
    await client.obtain(cc)
    assert [f["grant_type"] for f in server.forms] == ["refresh_token", "client_credentials"]


async def test_invalid_url_is_a_local_configuration_error(client: TokenEndpointClient) -> None:
    with pytest.raises(IntegrationConfigError):
        await client.identity("http://[::1/id/x/y", Secret("t"))


@pytest.mark.parametrize(
    "url",
    ["http://acme.my.salesforce.com/id/00D/005", "http://10.0.0.8/id/x/y", "ftp://x/id/a/b"],
)
async def test_credentials_never_go_over_plain_http_to_remote_hosts(
    client: TokenEndpointClient, url: str
) -> None:
    with pytest.raises(IntegrationConfigError) as info:
        await client.identity(url, Secret(CANARY_ACCESS))
    assert info.value.error == "invalid_configuration"
    if url.startswith("http:"):
        with pytest.raises(IntegrationConfigError):
            await client.refresh(app_for(url.rsplit("/id/", 1)[0]), Secret(CANARY_REFRESH))
