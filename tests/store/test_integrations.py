"""tokenkeep.store.integrations: put, get, list, delete (both engines)."""

from __future__ import annotations

import pytest

from tokenkeep.clock import ManualClock
from tokenkeep.errors import ConflictError, NotFoundError, ValidationError
from tokenkeep.secret import Secret
from tokenkeep.store import ConnectionInput, Store


async def test_integration_put_get_list_delete(store: Store, clock: ManualClock) -> None:
    created, was_new = await store.integrations.put(
        "sf",
        client_id="3MVG9",
        client_secret=Secret("s3cret"),
        login_url="https://login.salesforce.com",
        scopes=["api", "refresh_token"],
        metadata={"team": "sales"},
    )
    assert was_new
    assert created.has_client_secret
    assert created.secrets is None
    assert "s3cret" not in repr(created)

    clock.advance(5)
    _, was_new = await store.integrations.put(
        "sf",
        client_id="3MVG9-v2",
        login_url="https://test.salesforce.com",
        auth_mode="jwt_bearer",
        private_key="-----BEGIN PRIVATE KEY-----x",
        username="integration@example.com",
        session_timeout_seconds=900,
    )
    assert not was_new
    full = await store.integrations.get("sf", with_secrets=True)
    assert full.secrets is not None
    assert full.secrets.client_secret == Secret("s3cret")  # kept: not passed
    assert full.secrets.private_key == Secret("-----BEGIN PRIVATE KEY-----x")
    assert (full.client_id, full.auth_mode, full.session_timeout_seconds) == (
        "3MVG9-v2",
        "jwt_bearer",
        900,
    )
    assert full.created_at < full.updated_at == clock.now()

    cleared, _ = await store.integrations.put(
        "sf", client_id="x", client_secret=None, login_url="https://login.salesforce.com"
    )
    assert not cleared.has_client_secret
    assert [i.key for i in await store.integrations.list()] == ["sf"]
    with pytest.raises(ValidationError, match="auth_mode"):
        await store.integrations.put("bad", client_id="x", login_url="u", auth_mode="magic")

    await store.connections.create(
        ConnectionInput(
            id="c1",
            integration_key="sf",
            org_id="00D",
            user_id="005",
            instance_url="https://a.my.salesforce.com",
            access_token="t",
        )
    )
    with pytest.raises(ConflictError, match="still has 1 connection"):
        await store.integrations.delete("sf")
    await store.connections.delete("c1")
    await store.integrations.delete("sf")
    with pytest.raises(NotFoundError):
        await store.integrations.get("sf")
    with pytest.raises(NotFoundError):
        await store.integrations.delete("sf")
