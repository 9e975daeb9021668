"""tokenkeep.crypto: AES-256-GCM keyring, ciphertext format, key files."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from tokenkeep.config import load_settings
from tokenkeep.crypto import (
    KEYS_FILE_NAME,
    Keyring,
    ciphertext_key_id,
    load_or_create_keyring,
    new_key_bytes,
    write_keys_file,
)
from tokenkeep.errors import EncryptionKeyError


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_round_trip_and_self_describing_format() -> None:
    ring = Keyring.generate("k1")
    value = ring.encrypt("00D!secret-token", row_id="conn_1", field="connections.access_token")
    assert value.startswith("v1.k1.")
    assert "secret-token" not in value
    assert ciphertext_key_id(value) == "k1"
    assert ring.decrypt(value, row_id="conn_1", field="connections.access_token") == (
        "00D!secret-token"
    )


def test_fresh_nonce_per_value() -> None:
    ring = Keyring.generate("k1")
    a = ring.encrypt("same", row_id="r", field="f")
    b = ring.encrypt("same", row_id="r", field="f")
    assert a != b
    nonce_a = base64.urlsafe_b64decode(a.split(".")[2] + "==")[:12]
    nonce_b = base64.urlsafe_b64decode(b.split(".")[2] + "==")[:12]
    assert nonce_a != nonce_b


@pytest.mark.parametrize(
    ("row_id", "field"),
    [("conn_2", "connections.access_token"), ("conn_1", "connections.refresh_token")],
)
def test_value_moved_to_other_row_or_field_fails(row_id: str, field: str) -> None:
    ring = Keyring.generate("k1")
    value = ring.encrypt("tok", row_id="conn_1", field="connections.access_token")
    with pytest.raises(EncryptionKeyError, match="copied from another row or field"):
        ring.decrypt(value, row_id=row_id, field=field)


def test_missing_key_names_the_key_id_never_the_key() -> None:
    old = Keyring.generate("k1")
    value = old.encrypt("tok", row_id="r", field="f")
    other = Keyring.generate("k2")
    with pytest.raises(EncryptionKeyError) as info:
        other.decrypt(value, row_id="r", field="f")
    assert "'k1'" in info.value.message
    assert "TOKENKEEP_ENCRYPTION_KEYS" in info.value.message
    assert old.export().reveal().split(":")[1] not in info.value.message


def test_wrong_key_under_same_id_fails() -> None:
    value = Keyring.generate("k1").encrypt("tok", row_id="r", field="f")
    with pytest.raises(EncryptionKeyError, match="key 'k1'"):
        Keyring.generate("k1").decrypt(value, row_id="r", field="f")


def test_repr_and_str_hide_key_material() -> None:
    raw = new_key_bytes()
    ring = Keyring([("k1", raw)])
    for text in (repr(ring), str(ring), repr(ring.export()), f"{ring.export()}"):
        assert _b64(raw) not in text
        assert raw.hex() not in text
    assert "k1" in repr(ring)


def test_parse_several_keys_primary_first_all_readable() -> None:
    k1, k2 = new_key_bytes(), new_key_bytes()
    old = Keyring([("k1", k1)])
    value = old.encrypt("tok", row_id="r", field="f")
    ring = Keyring.parse(f" k2:{_b64(k2)} , k1:{_b64(k1)} ")
    assert ring.primary_key_id == "k2"
    assert ring.key_ids == ("k2", "k1")
    assert ring.decrypt(value, row_id="r", field="f") == "tok"
    assert ciphertext_key_id(ring.encrypt("x", row_id="r", field="f")) == "k2"
    assert Keyring.parse(ring.export().reveal()).key_ids == ("k2", "k1")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "holds no key"),
        ("k1", "is not '<key id>:<base64url key>'"),
        (f"k1:{_b64(b'short')}", "must be 32 bytes"),
        ("bad id!:" + _b64(b"x" * 32), "is invalid"),
        (f"k1:{_b64(b'x' * 32)},k1:{_b64(b'y' * 32)}", "appears twice"),
        ("k1:***", "not valid base64url"),
    ],
)
def test_parse_rejects_bad_input_with_one_sentence(text: str, fragment: str) -> None:
    with pytest.raises(EncryptionKeyError, match=fragment.replace("(", r"\(")):
        Keyring.parse(text)


def test_promote_keeps_old_keys_readable() -> None:
    ring = Keyring.generate("k1")
    old_value = ring.encrypt("tok", row_id="r", field="f")
    ring.promote("k2", new_key_bytes())
    assert ring.primary_key_id == "k2"
    assert ciphertext_key_id(ring.encrypt("x", row_id="r", field="f")) == "k2"
    assert ring.decrypt(old_value, row_id="r", field="f") == "tok"
    with pytest.raises(EncryptionKeyError, match="already used"):
        ring.promote("k1", new_key_bytes())


def test_unknown_format_is_refused() -> None:
    with pytest.raises(EncryptionKeyError, match="unknown format"):
        Keyring.generate().decrypt("plaintext-token", row_id="r", field="f")


def test_keys_file_created_once_with_mode_0600(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", encryption_keys=None)
    first = load_or_create_keyring(settings)
    path = tmp_path / "data" / KEYS_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_keyring(settings)
    assert second.key_ids == first.key_ids
    value = first.encrypt("tok", row_id="r", field="f")
    assert second.decrypt(value, row_id="r", field="f") == "tok"


def test_environment_keys_win_over_the_file(tmp_path: Path) -> None:
    env_ring = Keyring.generate("envkey")
    settings = load_settings(data_dir=tmp_path / "data", encryption_keys=env_ring.export().reveal())
    assert load_or_create_keyring(settings).key_ids == ("envkey",)
    assert not (tmp_path / "data" / KEYS_FILE_NAME).exists()


def test_running_process_picks_up_a_rotation_from_the_keys_file(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", encryption_keys=None)
    server = load_or_create_keyring(settings)
    cli = load_or_create_keyring(settings)
    old_primary = cli.primary_key_id
    cli.promote("k2", new_key_bytes())
    write_keys_file(tmp_path / "data" / KEYS_FILE_NAME, cli)
    value = cli.encrypt("tok", row_id="r", field="f")
    # The server never saw k2: it re-reads the file, reads the value and adopts k2 as primary.
    assert server.decrypt(value, row_id="r", field="f") == "tok"
    assert server.key_ids == ("k2", old_primary)
    assert ciphertext_key_id(server.encrypt("x", row_id="r", field="f")) == "k2"
