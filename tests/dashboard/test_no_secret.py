"""No page of the dashboard ever carries a secret: tokens, client secret, API key, webhook
secret, the session cookie. Canary values are stored, every page is rendered (after actions
that log, diagnose and fail), and none of them may appear in any HTML."""

from __future__ import annotations

import httpx
from tests.dashboard.dash_helpers import PAGES, csrf_of, logged_in

from tokenkeep.harness import GatewayUnderTest

CANARY_ACCESS = "00Dcanary!AQcanaryAccessTokenNeverShown0123456789"
CANARY_REFRESH = "5AepCanaryRefreshTokenNeverShown0123456789"
CANARY_CLIENT_SECRET = "CanaryClientSecretNeverShown0123456789"


async def test_no_page_shows_a_secret(gw: GatewayUnderTest) -> None:
    emu = gw.emulator
    org = emu.orgs[0]
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30) as api:
        put = await api.put(
            "/integrations/canary",
            json={
                "client_id": emu.apps[0].client_id,
                "client_secret": CANARY_CLIENT_SECRET,
                "login_url": emu.login_url,
            },
        )
        assert put.status_code in (200, 201), put.text
        imported = await api.post(
            "/connections",
            json={
                "connection_id": "canary",
                "integration": "canary",
                "credentials": {
                    "access_token": CANARY_ACCESS,
                    "refresh_token": CANARY_REFRESH,
                    "instance_url": org.instance_url,
                    "id": f"{emu.login_url}/id/{org.org_id}/{org.users[0].user_id}",
                },
            },
        )
        assert imported.status_code == 201, imported.text
        hook = await api.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        webhook_secret = hook.json()["secret"]
        # A proxied call with the dead canary token: logs, counts, a cause.
        await api.get("/c/canary/services/data/v60.0/query?q=SELECT+Id+FROM+Account")
    secrets = {
        "access token": CANARY_ACCESS,
        "refresh token": CANARY_REFRESH,
        "client secret": CANARY_CLIENT_SECRET,
        "api key": gw.api_key.reveal(),
        "webhook secret": webhook_secret,
        "webhook secret body": webhook_secret.removeprefix("whsec_"),
    }
    pages: dict[str, str] = {}
    async with logged_in(gw) as client:
        secrets["session cookie"] = client.cookies["tk_dashboard"]
        token = csrf_of((await client.get("/dashboard")).text)
        for action in ("diagnose", "refresh"):
            await client.post(f"/dashboard/connections/canary/{action}", data={"csrf_token": token})
        link = await client.post(
            "/dashboard/connections/canary/reconnect-link", data={"csrf_token": token}
        )
        pages["reconnect link"] = link.text
        for path in (
            *PAGES,
            "/connections/canary",
            f"/orgs/{org.org_id}",
            "/logs?connection=canary",
            "/connections?q=canary",
            "/login",
        ):
            answer = await client.get(f"/dashboard{path}")
            assert answer.status_code == 200, (path, answer.status_code)
            pages[path] = answer.text
    assert "Diagnosis" in pages["/connections/canary"]
    leaks = [
        f"{name} in {path}"
        for path, html in pages.items()
        for name, value in secrets.items()
        if value in html
    ]
    assert leaks == []
