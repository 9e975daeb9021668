"""The dashboard in a real browser (Playwright driving Debian's Chromium, headless).

An admin logs in, finds a connection, reads its diagnosis after a cause is set up in the
emulator, refreshes it and sees the timeline grow, copies a reconnect link and completes the
connect flow on the emulator's HTML login page; a wrong key and a missing CSRF token are
refused. Every page is saved as a screenshot (laptop and phone width) in
``artifacts/screenshots/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.dashboard.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    LAPTOP,
    PHONE,
    SCREENSHOTS,
    chromium_or_skip,
)

from tokenkeep.harness import GatewayUnderTest

pytestmark = pytest.mark.browser

QUERY = "/services/data/v60.0/query?q=SELECT+Id+FROM+Account"


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    chromium_or_skip()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def _shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def _log_in(page: Any, gw: GatewayUnderTest, key: str) -> None:
    await page.goto(f"{gw.base_url}/dashboard")
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")


async def test_an_admin_fixes_a_connection_from_the_dashboard(
    gw: GatewayUnderTest, chromium: Any
) -> None:
    from playwright.async_api import expect

    await gw.connect("acme")
    await gw.connect("globex", org=1)
    org = gw.emulator.orgs[0]
    context = await chromium.new_context(viewport=LAPTOP)
    page = await context.new_page()

    # A wrong key is refused.
    await _log_in(page, gw, "tk_wrong")
    await expect(page.locator(".alert")).to_contain_text("not valid")
    await _shoot(page, "login-refused")
    await _log_in(page, gw, gw.api_key.reveal())
    await expect(page.locator("h1")).to_have_text("Overview")

    # Find the connection.
    await page.click("nav >> text=Connections")
    await page.fill("input[name=q]", "acme")
    await page.click("text=Filter")
    await expect(page.locator("table.connections tbody tr")).to_have_count(1)
    await page.click("table.connections >> text=acme")
    await expect(page.locator("h1")).to_have_text("acme")

    # A cause in the emulator; the diagnosis says it in words.
    gw.emulator.admin.patch_org(org.org_id, {"api_client_control": True})
    await page.click("#diagnose")
    await expect(page.locator(".diagnosis .headline")).to_contain_text("API Access Control")
    await expect(page.locator(".fix")).to_contain_text("install the app org-wide")
    await expect(page.locator(".page-head .badge")).to_have_text("Admin action")

    # The admin fixes the org; a new diagnosis clears the status; refresh now.
    gw.emulator.admin.patch_org(org.org_id, {"allowed_client_ids": [gw.emulator.apps[0].client_id]})
    await page.click("#diagnose")
    await expect(page.locator(".page-head .badge")).to_have_text("Active")
    rows_before = await page.locator("table.timeline tbody tr").count()
    await page.click("#refresh-now")
    await expect(page.locator(".flash")).to_contain_text("Refreshed")
    await expect(page.locator("table.timeline tbody tr").first).to_contain_text("Refreshed (")
    assert await page.locator("table.timeline tbody tr").count() > rows_before

    # A reconnect link, completed on the emulator's own login page.
    await page.click("#reconnect-link")
    link = await page.locator("#reconnect-url").input_value()
    assert "/connect/" in link
    await _shoot(page, "connection-laptop")
    user = org.users[0]
    customer = await chromium.new_page()  # the customer's own browser: no dashboard cookie
    await customer.goto(link)
    await customer.fill("#username", user.username)
    await customer.fill("#password", user.password)
    await customer.click("#Login")
    if await customer.locator("#oaapprove").count():
        await customer.click("#oaapprove")
    await expect(customer.locator("h1")).to_have_text("Connected")
    await customer.close()
    await page.reload()
    await expect(page.locator("table.timeline")).to_contain_text("Connected")

    # A form posted without the CSRF token is refused (and nothing is refreshed).
    grants = gw.grants()
    refused = await page.request.post(f"{gw.base_url}/dashboard/connections/acme/refresh")
    assert refused.status == 403
    assert "security token" in await refused.text()
    assert gw.grants() == grants
    await page.goto(f"{gw.base_url}/dashboard/connections/acme")
    await page.evaluate("document.querySelector('#refresh-now').form.csrf_token.remove()")
    await page.click("#refresh-now")
    await expect(page.locator("h1")).to_have_text("Request refused")
    await _shoot(page, "csrf-refused")
    assert gw.grants() == grants

    # The log page updates itself (htmx polling): a new call appears without a reload.
    await page.goto(f"{gw.base_url}/dashboard/logs?kind=call")
    await expect(page.locator("#log-rows")).not_to_contain_text("globex")
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30) as api:
        assert (await api.get(f"/c/globex{QUERY}")).status_code == 200
    await expect(page.locator("#log-rows")).to_contain_text("globex", timeout=15_000)
    await context.close()


async def test_screenshots_of_every_page(gw: GatewayUnderTest, chromium: Any) -> None:
    await gw.connect("acme")
    await gw.connect("globex", org=1)
    await gw.connect("initech", org=1, user=1)
    headers = {"Authorization": f"Bearer {gw.api_key.reveal()}"}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=headers, timeout=30) as api:
        await api.post("/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        for _ in range(3):
            await api.get(f"/c/acme{QUERY}")
        gw.emulator.admin.set_password(gw.emulator.orgs[1].users[0].username, "N3w-passw0rd!")
        gw.emulator.admin.advance_clock(3 * 3600)
        await api.get(f"/c/globex{QUERY}")
        await api.get(f"/c/acme{QUERY}")
        await api.post("/connections/globex/diagnose")
    await gw.gateway.org_health.flush()
    org = gw.emulator.orgs[0].org_id
    pages = {
        "overview": "",
        "connections": "/connections",
        "connection": "/connections/globex",
        "orgs": "/orgs",
        "org": f"/orgs/{org}",
        "logs": "/logs",
        "webhooks": "/webhooks",
    }
    for device, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        context = await chromium.new_context(viewport=viewport)
        page = await context.new_page()
        await page.goto(f"{gw.base_url}/dashboard/login")
        await _shoot(page, f"login-{device}")
        await _log_in(page, gw, gw.api_key.reveal())
        for name, path in pages.items():
            answer = await page.goto(f"{gw.base_url}/dashboard{path}")
            assert answer is not None
            assert answer.status == 200, name
            # Styled: the stylesheet applied (the top bar is not the default white).
            colour = await page.evaluate(
                "getComputedStyle(document.querySelector('.topbar')).backgroundColor"
            )
            assert colour != "rgba(0, 0, 0, 0)", name
            # Nothing wider than the screen but the tables' own scrolling boxes.
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name} at {device} width scrolls sideways by {overflow}px"
            await _shoot(page, f"{name}-{device}")
        await context.close()
