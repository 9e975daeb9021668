"""Integrations, API keys, the operation log and the outbox (both engines)."""

from __future__ import annotations

import stat
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.errors import ConflictError, NotFoundError, ValidationError
from tokenkeep.secret import Secret
from tokenkeep.store import ConnectionInput, Store, ensure_bootstrap_api_key
from tokenkeep.store.api_keys import SECRET_KEY_FILE_NAME
from tokenkeep.store.models import ApiKeyRow, OutboxRow


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


async def test_api_keys_hash_only_verify_revoke(store: Store, clock: ManualClock) -> None:
    created = await store.api_keys.create("ci")
    plaintext = created.secret.reveal()
    assert plaintext.startswith("tk_")
    assert len(plaintext) >= 40
    assert created.key.prefix == plaintext[:10]
    async with store.db.read() as session:
        stored = (await session.scalars(select(ApiKeyRow))).all()
    assert all(plaintext not in (r.key_hash, r.prefix, r.name) for r in stored)

    ok = await store.api_keys.verify(plaintext)
    assert ok is not None
    assert ok.id == created.key.id
    assert (
        await store.api_keys.verify(plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    )
    assert await store.api_keys.verify("") is None
    listed = await store.api_keys.list()
    assert [k.last_used_at for k in listed] == [clock.now()]

    revoked = await store.api_keys.revoke(created.key.prefix)
    assert revoked.revoked_at == clock.now()
    assert await store.api_keys.verify(plaintext) is None
    with pytest.raises(NotFoundError):
        await store.api_keys.revoke("tk_nothing")


async def test_bootstrap_key_generated_once_and_saved_0600(store: Store, tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", secret_key=None)
    first = await ensure_bootstrap_api_key(store, settings)
    assert first is not None
    saved = tmp_path / "data" / SECRET_KEY_FILE_NAME
    assert saved.read_text().strip() == first.reveal()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert await store.api_keys.verify(first) is not None
    assert await ensure_bootstrap_api_key(store, settings) is None  # second start


async def test_env_secret_key_is_accepted_and_replaceable(
    store: Store, tmp_path: Path, clock: ManualClock
) -> None:
    one = load_settings(data_dir=tmp_path / "data", secret_key="tk_env_value_one_0123456789")
    assert await ensure_bootstrap_api_key(store, one) is None
    assert not (tmp_path / "data" / SECRET_KEY_FILE_NAME).exists()
    assert await store.api_keys.verify("tk_env_value_one_0123456789") is not None
    two = load_settings(data_dir=tmp_path / "data", secret_key="tk_env_value_two_0123456789")
    await ensure_bootstrap_api_key(store, two)
    clock.advance(10)  # past the in-process verify cache
    assert await store.api_keys.verify("tk_env_value_two_0123456789") is not None
    assert await store.api_keys.verify("tk_env_value_one_0123456789") is None


async def test_operation_log_filters_newest_first(store: Store, clock: ManualClock) -> None:
    start = clock.now()
    await store.operations.log("refresh", outcome="ok", connection_id="c1", org_id="00DA")
    clock.advance(1)
    await store.operations.log(
        "proxy",
        outcome="error",
        connection_id="c1",
        org_id="00DA",
        cause="expired",
        status_code=401,
        duration_ms=12.5,
        detail={"path": "/services/data"},
    )
    clock.advance(1)
    await store.operations.log("proxy", outcome="ok", connection_id="c2", org_id="00DB")
    entries = await store.operations.list(org_id="00DA")
    assert [(e.kind, e.outcome) for e in entries] == [("proxy", "error"), ("refresh", "ok")]
    assert entries[0].cause == "expired"
    assert entries[0].detail == {"path": "/services/data"}
    assert [e.connection_id for e in await store.operations.list(kind="proxy")] == ["c2", "c1"]
    since = await store.operations.list(since=start + timedelta(seconds=1))
    assert len(since) == 2
    assert len(await store.operations.list(limit=1)) == 1


async def _event_then_fail(store: Store) -> None:
    async with store.db.write() as session:
        store.outbox.add_event(session, "connection.refresh_failed", payload={"x": 1})
        await store.operations.log("refresh", outcome="error", session=session)
        raise RuntimeError("the state change failed")


async def test_outbox_event_commits_and_rolls_back_with_its_transaction(store: Store) -> None:
    async with store.db.write() as session:
        event_id = store.outbox.add_event(
            session, "connection.created", payload={"connection_id": "c1"}, connection_id="c1"
        )
        await store.operations.log("connect", outcome="ok", connection_id="c1", session=session)
    assert event_id.startswith("evt_")
    with pytest.raises(RuntimeError):
        await _event_then_fail(store)
    async with store.db.read() as session:
        events = (await session.scalars(select(OutboxRow))).all()
        log_count = await session.scalar(select(func.count()).select_from(OutboxRow))
    assert [(e.event_id, e.event_type, e.delivered_at) for e in events] == [
        (event_id, "connection.created", None)
    ]
    assert log_count == 1
    assert [e.kind for e in await store.operations.list()] == ["connect"]
