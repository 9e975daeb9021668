"""A refresh answer's instance_url is checked before tokens go there: https only (loopback
http only with allow_insecure_loopback). The tokens are stored anyway: never lose a
refresh token."""

from __future__ import annotations

import pytest
from lifecycle_support import Rig, connect, settings_for
from sqlalchemy import select

from tokenkeep.errors import ActionRequiredError
from tokenkeep.lifecycle.coordinator import RefreshCoordinator
from tokenkeep.store.models import OutboxRow


async def test_an_insecure_instance_url_from_a_refresh_is_refused_tokens_kept(
    rig: Rig, db_url: str
) -> None:
    rig.emu.admin.patch_app(rig.emu.app_config.client_id, {"rotate_refresh_tokens": True})
    user = rig.emu.orgs[0].users[0]
    before = await connect(rig.store, rig.emu, rig.client, user, "c1", clock=rig.clock)
    # A gateway that does NOT allow plain http to loopback: the emulator's http instance
    # URL is exactly what it must refuse to send tokens to.
    strict = RefreshCoordinator(
        rig.store,
        rig.client,
        settings=settings_for(db_url, allow_insecure_loopback=False),
        clock=rig.clock,
    )
    rig.advance(7300)
    with pytest.raises(ActionRequiredError) as info:
        await strict.fresh_token("c1", min_ttl=60)
    assert info.value.details["cause"] == "wrong_instance"
    after = await rig.store.connections.get("c1", with_credentials=True)
    assert (after.status, after.status_reason) == (
        "action_required",
        "wrong_instance:insecure_instance_url",
    )
    # The rotated refresh token was committed all the same.
    assert after.version == before.version + 1
    assert after.refresh_token_fingerprint != before.refresh_token_fingerprint
    assert rig.refresh_grants() == 1
    with pytest.raises(ActionRequiredError):
        await strict.fresh_token("c1", min_ttl=60)
    assert rig.refresh_grants() == 1  # never retried on its own
    async with rig.store.db.read() as session:
        reasons = (
            await session.scalars(
                select(OutboxRow.payload).where(
                    OutboxRow.event_type == "connection.action_required"
                )
            )
        ).all()
    assert [r["reason"] for r in reasons] == ["wrong_instance:insecure_instance_url"]
