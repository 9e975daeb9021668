"""A connection's token columns: the one place that encrypts and decrypts them.

Each ciphertext is bound to ``(connection id, field)`` (:data:`ACCESS_TOKEN_FIELD`,
:data:`REFRESH_TOKEN_FIELD`). :func:`token_columns` is the only encryptor: every write of a
``*_enc`` column re-encrypts the whole row under the primary key, so ``key_id`` names the
one key that wrote all of the row's ciphertexts (the rotation and the start-up check in
:mod:`tokenkeep.store.keys` rely on it). :func:`stored_refresh_token` and
:func:`credentials_of` read them back.
"""

from __future__ import annotations

from typing import Any

from tokenkeep.crypto import Keyring
from tokenkeep.secret import Secret, fingerprint
from tokenkeep.store.models import ConnectionRow
from tokenkeep.store.records import ConnectionCredentials

__all__ = [
    "ACCESS_TOKEN_FIELD",
    "REFRESH_TOKEN_FIELD",
    "credentials_of",
    "stored_refresh_token",
    "token_columns",
]

ACCESS_TOKEN_FIELD = "connections.access_token"
REFRESH_TOKEN_FIELD = "connections.refresh_token"


def _reveal(value: str | Secret) -> str:
    """The plain text of a token given as a string or a :class:`Secret`."""
    return value.reveal() if isinstance(value, Secret) else value


def token_columns(
    keyring: Keyring, conn_id: str, access_token: str | Secret, refresh_token: str | Secret | None
) -> dict[str, Any]:
    """The encrypted token columns of a connection row, and ``key_id``.

    The only code that encrypts a connection's tokens: every write of a ``*_enc`` column
    re-encrypts the whole row under the primary key, so ``key_id`` names the one key that
    wrote all of the row's ciphertexts (the rotation and the start-up check rely on it).
    """
    refresh = _reveal(refresh_token) if refresh_token is not None else None
    return {
        "access_token_enc": keyring.encrypt(
            _reveal(access_token), row_id=conn_id, field=ACCESS_TOKEN_FIELD
        ),
        "refresh_token_enc": (
            keyring.encrypt(refresh, row_id=conn_id, field=REFRESH_TOKEN_FIELD)
            if refresh is not None
            else None
        ),
        "refresh_token_fingerprint": fingerprint(refresh) if refresh is not None else None,
        "key_id": keyring.primary_key_id,
    }


def stored_refresh_token(keyring: Keyring, row: ConnectionRow) -> str | None:
    """The row's refresh token in plain text, or None when it has none."""
    if row.refresh_token_enc is None:
        return None
    return keyring.decrypt(row.refresh_token_enc, row_id=row.id, field=REFRESH_TOKEN_FIELD)


def credentials_of(keyring: Keyring, row: ConnectionRow) -> ConnectionCredentials:
    """A row's tokens, decrypted, as :class:`Secret`\\ s, with the row's ``version``."""
    refresh = stored_refresh_token(keyring, row)
    return ConnectionCredentials(
        access_token=Secret(
            keyring.decrypt(row.access_token_enc, row_id=row.id, field=ACCESS_TOKEN_FIELD)
        ),
        refresh_token=Secret(refresh) if refresh is not None else None,
        version=row.version,
    )
