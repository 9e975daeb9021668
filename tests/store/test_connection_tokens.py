"""tokenkeep.store.connection_tokens: the token columns' encryption, bound to row and field."""

from __future__ import annotations

import pytest

from tokenkeep.crypto import Keyring
from tokenkeep.errors import EncryptionKeyError
from tokenkeep.secret import Secret, fingerprint
from tokenkeep.store.connection_tokens import (
    ACCESS_TOKEN_FIELD,
    credentials_of,
    stored_refresh_token,
    token_columns,
)
from tokenkeep.store.models import ConnectionRow


def _row(conn_id: str, columns: dict[str, object], version: int = 3) -> ConnectionRow:
    return ConnectionRow(id=conn_id, version=version, **columns)


def test_columns_round_trip_under_the_primary_key() -> None:
    ring = Keyring.generate("k1")
    columns = token_columns(ring, "c1", Secret("access-1"), "refresh-1")
    assert columns["key_id"] == "k1"
    assert columns["refresh_token_fingerprint"] == fingerprint("refresh-1")
    assert "access-1" not in str(columns)
    assert "refresh-1" not in str(columns)
    row = _row("c1", columns)
    assert stored_refresh_token(ring, row) == "refresh-1"
    credentials = credentials_of(ring, row)
    assert credentials.access_token.reveal() == "access-1"
    assert credentials.refresh_token is not None
    assert credentials.refresh_token.reveal() == "refresh-1"
    assert credentials.version == 3


def test_no_refresh_token_is_no_column() -> None:
    ring = Keyring.generate("k1")
    columns = token_columns(ring, "c1", "access-1", None)
    assert columns["refresh_token_enc"] is None
    assert columns["refresh_token_fingerprint"] is None
    row = _row("c1", columns)
    assert stored_refresh_token(ring, row) is None
    assert credentials_of(ring, row).refresh_token is None


def test_a_ciphertext_moved_to_another_row_is_refused() -> None:
    ring = Keyring.generate("k1")
    columns = token_columns(ring, "c1", "access-1", None)
    with pytest.raises(EncryptionKeyError):
        credentials_of(ring, _row("c2", columns))
    assert ring.decrypt(columns["access_token_enc"], row_id="c1", field=ACCESS_TOKEN_FIELD)
