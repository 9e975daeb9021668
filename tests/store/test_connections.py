"""tokenkeep.store.connections: import, read, list, delete, compare-and-swap (both engines)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from tokenkeep.clock import ManualClock
from tokenkeep.config import Settings
from tokenkeep.errors import ConflictError, EncryptionKeyError, NotFoundError, ValidationError
from tokenkeep.secret import Secret
from tokenkeep.store import ConnectionInput, Store, open_store
from tokenkeep.store.models import ConnectionRow

CANARY_ACCESS = "00Dcanary!ACCESS.TOKEN.6f1c2a9e"
CANARY_REFRESH = "5Aep861canaryREFRESH7c0ffee"


async def _integration(store: Store, key: str = "sf") -> None:
    await store.integrations.put(
        key,
        client_id="3MVG9-client",
        client_secret="client-secret-value",
        login_url="https://login.salesforce.com",
        scopes=["api", "refresh_token"],
    )


def _input(conn_id: str | None = "c1", **overrides: object) -> ConnectionInput:
    data: dict[str, object] = {
        "id": conn_id,
        "integration_key": "sf",
        "org_id": "00D000000000001AAA",
        "user_id": "005000000000001AAA",
        "username": "ada@example.com",
        "instance_url": "https://acme.my.salesforce.com",
        "access_token": CANARY_ACCESS,
        "refresh_token": CANARY_REFRESH,
    }
    data.update(overrides)
    return ConnectionInput(**data)  # type: ignore[arg-type]


async def test_import_restart_still_readable(
    store_settings: Settings, clock: ManualClock, tmp_path: Path
) -> None:
    first = await open_store(store_settings, clock=clock)
    await _integration(first)
    created = await first.connections.create(_input())
    assert created.credentials is None
    assert created.has_refresh_token
    await first.close()

    second = await open_store(store_settings, clock=clock)
    try:
        conn = await second.connections.get("c1", with_credentials=True)
        assert conn.credentials is not None
        assert conn.credentials.access_token.reveal() == CANARY_ACCESS
        assert conn.credentials.refresh_token == Secret(CANARY_REFRESH)
        assert conn.refresh_token_fingerprint == Secret(CANARY_REFRESH).fingerprint
        assert conn.created_at == clock.now()
        assert conn.created_at.tzinfo is not None
        integration = await second.integrations.get("sf", with_secrets=True)
        assert integration.secrets is not None
        assert integration.secrets.client_secret == Secret("client-secret-value")
    finally:
        await second.close()


async def test_tokens_never_stored_in_clear(store_settings: Settings, clock: ManualClock) -> None:
    store = await open_store(store_settings, clock=clock)
    await _integration(store)
    await store.connections.create(_input())
    await store.connections.update_credentials("c1", 1, access_token=CANARY_ACCESS + "-2")
    await store.operations.log("refresh", outcome="ok", connection_id="c1")
    if store_settings.is_sqlite:
        await store.close()
        db_file = Path(store_settings.db_url.split(":///", 1)[1])
        blob = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))
    else:
        # Every row of every table, rendered as text by the server itself.
        async with store.db.read() as session:
            tables = (
                await session.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            ).scalars()
            parts = [
                str(row)
                for table in list(tables)
                for row in (
                    await session.execute(text(f'SELECT t::text FROM "{table}" t'))
                ).scalars()
            ]
        await store.close()
        blob = "\n".join(parts).encode()
    assert b"acme.my.salesforce.com" in blob  # we are looking at the right data
    for secret in (CANARY_ACCESS, CANARY_REFRESH, "client-secret-value"):
        assert secret.encode() not in blob


async def test_duplicate_id_conflicts_and_unknown_integration_is_not_found(
    store: Store,
) -> None:
    await _integration(store)
    await store.connections.create(_input())
    with pytest.raises(ConflictError, match="'c1' already exists"):
        await store.connections.create(_input(access_token="other"))
    with pytest.raises(NotFoundError, match="integration 'nope'"):
        await store.connections.create(_input("c2", integration_key="nope"))
    still = await store.connections.get("c1", with_credentials=True)
    assert still.credentials is not None
    assert still.credentials.access_token.reveal() == CANARY_ACCESS


async def test_generated_id_and_delete(store: Store) -> None:
    await _integration(store)
    conn = await store.connections.create(_input(None))
    assert conn.id.startswith("conn_")
    await store.connections.delete(conn.id)
    with pytest.raises(NotFoundError):
        await store.connections.get(conn.id)
    with pytest.raises(NotFoundError):
        await store.connections.delete(conn.id)


async def test_list_filters_and_cursor_pagination(store: Store, clock: ManualClock) -> None:
    await _integration(store)
    await _integration(store, "other")
    for i in range(7):
        await store.connections.create(
            _input(f"c{i}", org_id="00DA" if i % 2 else "00DB", status="active")
        )
        clock.advance(1 if i != 3 else 0)  # two rows share a created_at: the id breaks ties
    await store.connections.create(_input("x1", integration_key="other"))
    await store.connections.set_status("c2", "needs_reauth", reason="revoked")

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await store.connections.list(integration="sf", limit=3, cursor=cursor)
        seen += [c.id for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"c{i}" for i in range(7)]

    by_org = await store.connections.list(org_id="00DA")
    assert [c.id for c in by_org.items] == ["c1", "c3", "c5"]
    reauth = await store.connections.list(status="needs_reauth")
    assert [(c.id, c.status_reason) for c in reauth.items] == [("c2", "revoked")]
    assert (await store.connections.list(integration="other")).next_cursor is None
    with pytest.raises(ValidationError, match="cursor"):
        await store.connections.list(cursor="not-a-cursor")
    with pytest.raises(ValidationError, match="status"):
        await store.connections.list(status="sleeping")


async def test_compare_and_swap_rejects_a_stale_version(store: Store, clock: ManualClock) -> None:
    await _integration(store)
    conn = await store.connections.create(_input())
    assert conn.version == 1
    clock.advance(60)
    expires = clock.now() + timedelta(hours=2)
    assert await store.connections.update_credentials(
        "c1", 1, access_token="access-2", expires_at=expires, issued_to_address="127.0.0.2"
    )
    # A second writer that read version 1 loses: nothing it sends is written.
    assert not await store.connections.update_credentials(
        "c1", 1, access_token="stale-access", refresh_token="stale-refresh"
    )
    after = await store.connections.get("c1", with_credentials=True)
    assert after.version == 2
    assert after.credentials is not None
    assert after.credentials.access_token.reveal() == "access-2"
    # The refresh token was kept (not passed) and re-encrypted along with the row.
    assert after.credentials.refresh_token == Secret(CANARY_REFRESH)
    assert after.expires_at == expires
    assert after.last_refresh_at == clock.now()
    assert after.issued_to_address == "127.0.0.2"

    assert await store.connections.update_credentials(
        "c1", 2, access_token="access-3", refresh_token="refresh-3"
    )
    latest = await store.connections.get("c1", with_credentials=True)
    assert latest.credentials is not None
    assert latest.credentials.refresh_token == Secret("refresh-3")
    assert latest.refresh_token_fingerprint == Secret("refresh-3").fingerprint
    with pytest.raises(NotFoundError):
        await store.connections.update_credentials("gone", 1, access_token="x")


async def test_ciphertext_swapped_between_rows_fails(store: Store) -> None:
    await _integration(store)
    await store.connections.create(_input("c1"))
    await store.connections.create(_input("c2", access_token="second-token"))
    async with store.db.write() as session:
        stolen = await session.scalar(
            select(ConnectionRow.access_token_enc).where(ConnectionRow.id == "c1")
        )
        await session.execute(
            update(ConnectionRow).where(ConnectionRow.id == "c2").values(access_token_enc=stolen)
        )
    with pytest.raises(EncryptionKeyError, match="copied from another row"):
        await store.connections.get("c2", with_credentials=True)
    # Without asking for credentials the row still reads (listing never decrypts).
    assert (await store.connections.get("c2")).id == "c2"


async def test_note_used_from_writes_only_a_changed_address(
    store: Store, clock: ManualClock
) -> None:
    await _integration(store)
    created = await store.connections.create(_input())
    assert created.last_used_from_address is None
    clock.advance(5)
    assert await store.connections.note_used_from("c1", "10.0.0.1") is True
    assert await store.connections.note_used_from("c1", "10.0.0.1") is False  # no write
    assert await store.connections.note_used_from("c1", "10.0.0.2") is True
    conn = await store.connections.get("c1")
    assert conn.last_used_from_address == "10.0.0.2"
    # Bookkeeping, not a change of the connection: no new version, same updated_at.
    assert conn.version == created.version
    assert conn.updated_at == created.updated_at
    assert await store.connections.note_used_from("nobody", "10.0.0.1") is False
