"""A refresh answer whose ``signature`` does not verify is kept, never thrown away.

A relay on 127.0.0.1 sits in front of the emulator's token endpoint and rewrites the
signature of refresh answers (what a wrong stored client secret, or a provider-side change
in how the HMAC is computed, looks like to us). With rotation on, discarding such an answer
would lose the only live refresh token: the next attempt replays the rotated-out one and
the provider revokes the whole family.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import httpx
from aiohttp import web
from lifecycle_support import Rig, connect, register_integration
from sqlalchemy import select

from tokenkeep.store.models import OutboxRow


@contextlib.asynccontextmanager
async def tampering_relay(upstream: str) -> AsyncIterator[str]:
    """Forwards everything to ``upstream``; refresh answers get a wrong signature."""
    session = aiohttp.ClientSession()

    async def relay(request: web.Request) -> web.Response:
        form = dict(await request.post())
        async with session.request(
            request.method, upstream + request.path_qs, data=form or None
        ) as resp:
            body = await resp.read()
            status, ctype = resp.status, resp.content_type
        if status == 200 and form.get("grant_type") == "refresh_token":
            data = json.loads(body)
            data["signature"] = "AAAA" + str(data["signature"])[4:]
            body = json.dumps(data).encode()
        return web.Response(status=status, body=body, content_type=ctype)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()


async def _works(instance_url: str, token: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(
            instance_url + "/services/data/v60.0/limits",
            headers={"Authorization": f"Bearer {token}"},
        )
    return r.status_code == 200


async def test_a_mis_signed_refresh_answer_keeps_the_rotated_token(rig: Rig) -> None:
    rig.emu.admin.patch_app(rig.emu.app_config.client_id, {"rotate_refresh_tokens": True})
    async with tampering_relay(rig.emu.login_url) as relay:
        await register_integration(rig.store, rig.emu, login_url=relay)
        coordinator = rig.new_coordinator()
        user = rig.emu.orgs[0].users[0]
        await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
        for cycle in range(3):
            rig.advance(7300)  # dead: every cycle needs a refresh with the rotated token
            token = await coordinator.fresh_token("c1", min_ttl=60)
            assert token.version == cycle + 2
            assert await _works(token.instance_url, token.access_token.reveal())
    assert rig.refresh_grants() == 3  # one per cycle: nothing retried, no family revoked
    conn = await rig.store.connections.get("c1")
    assert conn.status == "active"
    assert conn.last_error is not None
    assert "client secret" in conn.last_error
    async with rig.store.db.read() as session:
        events = (
            await session.scalars(
                select(OutboxRow).where(OutboxRow.event_type == "connection.action_required")
            )
        ).all()
    assert events
    assert {e.payload["reason"] for e in events} == {"misconfigured:signature_mismatch"}
