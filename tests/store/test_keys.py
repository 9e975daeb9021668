"""tokenkeep.store.keys: start-up key check and rotation under load (both engines)."""

from __future__ import annotations

import asyncio
import random

import pytest

from tokenkeep.clock import ManualClock
from tokenkeep.config import Settings
from tokenkeep.crypto import Keyring, ciphertext_key_id, new_key_bytes
from tokenkeep.errors import EncryptionKeyError
from tokenkeep.store import ConnectionInput, Store, open_store, rotate_keys, verify_keyring
from tokenkeep.store.models import ConnectionRow, IntegrationRow


async def _seed(store: Store, n: int) -> None:
    await store.integrations.put(
        "sf",
        client_id="cid",
        client_secret="integration-secret",
        login_url="https://login.salesforce.com",
    )
    for i in range(n):
        await store.connections.create(
            ConnectionInput(
                id=f"c{i:03d}",
                integration_key="sf",
                org_id="00D1",
                user_id=f"005{i}",
                instance_url="https://acme.my.salesforce.com",
                access_token=f"access-{i}",
                refresh_token=f"refresh-{i}",
            )
        )


async def test_wrong_key_at_start_fails_clearly(
    store_settings: Settings, clock: ManualClock
) -> None:
    store = await open_store(store_settings, clock=clock)
    await _seed(store, 1)
    await store.close()
    impostor = Keyring.generate("k1")  # same id, different bytes
    with pytest.raises(EncryptionKeyError) as info:
        await open_store(store_settings, clock=clock, keyring=impostor)
    assert "'k1'" in info.value.message
    assert "not the key this database was written with" in info.value.message
    assert impostor.export().reveal().split(":")[1] not in info.value.message


async def test_missing_key_at_start_fails_clearly(
    store_settings: Settings, clock: ManualClock
) -> None:
    store = await open_store(store_settings, clock=clock)
    await _seed(store, 2)
    await store.close()
    with pytest.raises(EncryptionKeyError) as info:
        await open_store(store_settings, clock=clock, keyring=Keyring.generate("k2"))
    message = info.value.message
    assert "key 'k1' is missing from TOKENKEEP_ENCRYPTION_KEYS" in message
    assert "3 stored row(s)" in message  # 1 integration + 2 connections
    # Nothing was written under the wrong keyring: the right one still reads everything.
    again = await open_store(store_settings, clock=clock)
    try:
        conn = await again.connections.get("c001", with_credentials=True)
        assert conn.credentials is not None
        assert conn.credentials.access_token.reveal() == "access-1"
    finally:
        await again.close()


async def test_a_second_host_with_its_own_generated_key_refuses_to_start(
    store_settings: Settings, clock: ManualClock
) -> None:
    # First host: initialises the database (no rows yet, only its key check).
    first = await open_store(store_settings, clock=clock, keyring=Keyring.generate("kaaaa0001"))
    await first.close()
    # Second host: forgot to share TOKENKEEP_ENCRYPTION_KEYS and generated its own key.
    with pytest.raises(EncryptionKeyError) as info:
        await open_store(store_settings, clock=clock, keyring=Keyring.generate("kbbbb0002"))
    assert "initialised with encryption key(s) kaaaa0001" in info.value.message
    assert "TOKENKEEP_ENCRYPTION_KEYS" in info.value.message


async def test_rotation_while_50_readers_read(store: Store) -> None:
    n = 40
    await _seed(store, n)
    failures: list[BaseException] = []
    reads = 0
    key_ids_seen: set[str] = set()
    done = asyncio.Event()

    async def reader(seed: int) -> None:
        nonlocal reads
        rng = random.Random(seed)
        for _ in range(1000):  # bounded; normally stops when the rotation is done
            i = rng.randrange(n)
            try:
                conn = await store.connections.get(f"c{i:03d}", with_credentials=True)
                assert conn.credentials is not None
                assert conn.credentials.access_token.reveal() == f"access-{i}"
                key_ids_seen.add(conn.key_id)
                reads += 1
            except BaseException as exc:
                failures.append(exc)
                return
            if done.is_set():
                return
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader(s)) for s in range(50)]
    await asyncio.sleep(0)
    result = await rotate_keys(store.db, store.keyring, "k2", new_key_bytes(), batch_size=7)
    done.set()
    await asyncio.gather(*readers)

    assert failures == []
    assert reads >= 50
    # The readers really ran during the rotation: they met rows under both keys.
    assert key_ids_seen == {"k1", "k2"}
    assert result.primary_key_id == "k2"
    assert result.rows_reencrypted == n + 1
    assert result.rows_remaining == 0
    async with store.db.read() as session:
        rows = (await session.execute(ConnectionRow.__table__.select())).mappings().all()
        integration = await session.get(IntegrationRow, "sf")
    assert {r["key_id"] for r in rows} == {"k2"}
    assert {ciphertext_key_id(r["access_token_enc"]) for r in rows} == {"k2"}
    assert {ciphertext_key_id(r["refresh_token_enc"]) for r in rows} == {"k2"}
    assert integration is not None
    assert integration.key_id == "k2"

    # The old key can now be retired: a keyring with only k2 starts and reads everything.
    only_new = Keyring.parse(store.keyring.export().reveal().split(",")[0])
    assert only_new.key_ids == ("k2",)
    await verify_keyring(store.db, only_new)
    retired = Store(db=store.db, keyring=only_new, clock=store.clock)
    conn = await retired.connections.get("c007", with_credentials=True)
    assert conn.credentials is not None
    assert conn.credentials.refresh_token is not None
    assert conn.credentials.refresh_token.reveal() == "refresh-7"
    secrets = (await retired.integrations.get("sf", with_secrets=True)).secrets
    assert secrets is not None
    assert secrets.client_secret is not None
    assert secrets.client_secret.reveal() == "integration-secret"


async def test_rotation_never_overwrites_a_concurrent_refresh(store: Store) -> None:
    n = 30
    await _seed(store, n)

    async def refresher() -> None:
        for i in range(n):
            current = await store.connections.get(f"c{i:03d}")
            ok = await store.connections.update_credentials(
                current.id, current.version, access_token=f"new-access-{i}"
            )
            assert ok
            await asyncio.sleep(0)

    await asyncio.gather(
        rotate_keys(store.db, store.keyring, "k2", new_key_bytes(), batch_size=4),
        refresher(),
    )
    for i in range(n):
        conn = await store.connections.get(f"c{i:03d}", with_credentials=True)
        assert conn.credentials is not None
        assert conn.credentials.access_token.reveal() == f"new-access-{i}"
        assert conn.credentials.refresh_token is not None
        assert conn.credentials.refresh_token.reveal() == f"refresh-{i}"
        assert conn.version == 2
        assert conn.key_id == "k2"


async def test_instances_starting_together_on_a_fresh_database(
    store_settings: Settings, clock: ManualClock
) -> None:
    stores = await asyncio.gather(*(open_store(store_settings, clock=clock) for _ in range(3)))
    try:
        await _seed(stores[0], 1)
        conn = await stores[2].connections.get("c000", with_credentials=True)
        assert conn.credentials is not None
        assert conn.credentials.access_token.reveal() == "access-0"
    finally:
        for s in stores:
            await s.close()
