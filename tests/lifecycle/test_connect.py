"""tokenkeep.lifecycle.connect: the hosted connect flow as plain logic, on both engines.

The HTTP pages are tested in tests/api/test_connect.py; here the three steps run directly
against the store and the emulator: the link, the authorize URL (state + PKCE S256), the
callback (single use, all or nothing), and what a finished connect writes
(:mod:`tokenkeep.lifecycle.connected`).
"""

from __future__ import annotations

import random
from urllib.parse import parse_qs, urlsplit

import pytest
from lifecycle_support import INTEGRATION, Rig

from tokenkeep.lifecycle.connect import ConnectFlow, ConnectFlowError
from tokenkeep.store.models import OutboxRow
from tokenkeep.vocabulary import Status


def _flow(rig: Rig) -> ConnectFlow:
    flow = ConnectFlow(
        rig.store, rig.client, settings=rig.settings, clock=rig.clock, rng=random.Random(3)
    )
    app = rig.emu.app_config
    rig.emu.admin.patch_app(
        app.client_id, {"redirect_uris": [*app.redirect_uris, flow.redirect_uri]}
    )
    return flow


async def _consent(rig: Rig, flow: ConnectFlow, link: str, user: int = 0) -> tuple[str, str]:
    """Open the link, and consent as the emulator user: (state, code)."""
    authorize = await flow.begin(link.rsplit("/", 1)[1])
    assert isinstance(authorize, str)
    query = {k: v[0] for k, v in parse_qs(urlsplit(authorize).query).items()}
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == flow.redirect_uri
    code = rig.emu.admin.authorize(
        {
            "client_id": query["client_id"],
            "username": rig.emu.orgs[0].users[user].username,
            "redirect_uri": query["redirect_uri"],
            "scope": "api refresh_token",
            "code_challenge": query["code_challenge"],
            "state": query["state"],
        }
    )["code"]
    return query["state"], code


async def _events(rig: Rig) -> list[str]:
    from sqlalchemy import select

    async with rig.store.db.read() as session:
        return list((await session.execute(select(OutboxRow.event_type))).scalars())


async def test_a_connect_stores_the_connection_with_its_event(rig: Rig) -> None:
    flow = _flow(rig)
    link, _ = await flow.create_session(INTEGRATION, connection_id="c1", metadata={"t": "a"})
    state, code = await _consent(rig, flow, link)
    result = await flow.complete(state=state, code=code)
    assert (result.connection_id, result.created) == ("c1", True)
    conn = await rig.store.connections.get("c1")
    assert conn.status == Status.ACTIVE
    assert conn.org_id == rig.emu.orgs[0].org_id
    assert conn.issued_to_address == "127.0.0.1"
    assert conn.expires_at is not None
    assert conn.next_refresh_at is not None
    assert conn.next_refresh_at < conn.expires_at
    assert conn.metadata == {"t": "a"}
    assert await _events(rig) == ["connection.created"]


async def test_a_callback_is_single_use(rig: Rig) -> None:
    flow = _flow(rig)
    link, _ = await flow.create_session(INTEGRATION, connection_id="c1")
    state, code = await _consent(rig, flow, link)
    await flow.complete(state=state, code=code)
    with pytest.raises(ConnectFlowError) as caught:
        await flow.complete(state=state, code=code)
    assert caught.value.reason == "replayed"
    assert len(await _events(rig)) == 1  # nothing written twice


async def test_a_wrong_state_or_a_denial_stores_nothing(rig: Rig) -> None:
    flow = _flow(rig)
    link, _ = await flow.create_session(INTEGRATION, connection_id="c1")
    state, _code = await _consent(rig, flow, link)
    with pytest.raises(ConnectFlowError) as caught:
        await flow.complete(state="not-the-state", code="x")
    assert caught.value.reason == "state_mismatch"
    with pytest.raises(ConnectFlowError) as denied:
        await flow.complete(state=state, code=None, error="access_denied")
    assert denied.value.reason == "denied"
    assert await _events(rig) == []
    assert (await rig.store.connections.list()).items == []


async def test_reconnecting_a_broken_connection_recovers_it_with_a_new_version(
    rig: Rig,
) -> None:
    flow = _flow(rig)
    link, _ = await flow.create_session(INTEGRATION, connection_id="c1")
    state, code = await _consent(rig, flow, link)
    await flow.complete(state=state, code=code)
    before = await rig.store.connections.get("c1")
    await rig.store.connections.set_status("c1", Status.NEEDS_REAUTH, reason="revoked")
    link, _ = await flow.create_session(INTEGRATION, connection_id="c1")
    state, code = await _consent(rig, flow, link)
    result = await flow.complete(state=state, code=code)
    assert result.created is False
    after = await rig.store.connections.get("c1")
    assert after.status == Status.ACTIVE
    assert after.version > before.version  # a refresh in flight on the old grant is fenced
    assert await _events(rig) == ["connection.created", "connection.recovered"]
