"""tokenkeep.store.api_keys: hashed keys, verify, revoke, the bootstrap key (both engines)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from tokenkeep.clock import ManualClock
from tokenkeep.config import load_settings
from tokenkeep.errors import NotFoundError
from tokenkeep.store import Store, ensure_bootstrap_api_key
from tokenkeep.store.api_keys import SECRET_KEY_FILE_NAME
from tokenkeep.store.models import ApiKeyRow


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
