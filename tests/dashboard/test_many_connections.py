"""Every page with 10,000 connections: rendered, paged, searched (correctness, not timing)."""

from __future__ import annotations

import re

from tests.dashboard.dash_helpers import PAGES, insert_connections, logged_in

from tokenkeep.harness import GatewayUnderTest

COUNT = 10_000


async def test_ten_thousand_connections(gw: GatewayUnderTest) -> None:
    store = gw.gateway.store
    await insert_connections(store, COUNT, integration=gw.integration, start=gw.gateway.clock.now())
    async with logged_in(gw) as client:
        for path in PAGES:
            answer = await client.get(f"/dashboard{path}")
            assert answer.status_code == 200, path
        overview = (await client.get("/dashboard")).text
        assert "10,000" in overview or "8,571" in overview  # active: 10,000 - 1,429
        listing = await client.get("/dashboard/connections")
        assert "10,000 matches" in listing.text
        rows = re.findall(r'href="/dashboard/connections/(bulk-\d+)"', listing.text)
        assert len(rows) == 50
        assert rows[0] == "bulk-09999"  # newest first
        seen = set(rows)
        url = re.search(r'href="([^"]+)" rel="next"', listing.text)
        for _ in range(3):  # keyset pages follow on without overlap
            assert url is not None
            nxt = await client.get(url.group(1).replace("&amp;", "&"))
            page = re.findall(r'href="/dashboard/connections/(bulk-\d+)"', nxt.text)
            assert len(page) == 50
            assert not seen & set(page)
            seen |= set(page)
            url = re.search(r'href="([^"]+)" rel="next"', nxt.text)
        broken = await client.get(
            "/dashboard/connections", params={"status": "needs_reauth", "limit": 200}
        )
        assert "1,429 matches" in broken.text
        assert len(re.findall(r'href="/dashboard/connections/bulk-', broken.text)) == 200
        one = await client.get("/dashboard/connections", params={"q": "user4242@"})
        assert re.findall(r'href="/dashboard/connections/(bulk-\d+)"', one.text) == ["bulk-04242"]
        orgs = await client.get("/dashboard/orgs")
        assert len(re.findall(r'href="/dashboard/orgs/00Dbulk', orgs.text)) == 50
        assert 'rel="next"' in orgs.text
        org = await client.get("/dashboard/orgs/00Dbulk00000000042")
        assert org.status_code == 200
        assert "Connections (100)" in org.text
        assert (await client.get("/dashboard/connections/bulk-00042")).status_code == 200
