"""Key checks at start-up and key rotation over the stored rows.

Start-up (:func:`verify_keyring`): every key id that stored rows were written with must be
in the keyring, and every keyring key that has a canary must decrypt it -- otherwise
:class:`EncryptionKeyError` stops the start, naming the key id. Data is never silently
unreadable, and a wrong key never writes new rows next to old unreadable ones.

Rotation (:func:`rotate_keys`): promote the new key, then re-encrypt row after row in
short batches. Each row write is a compare-and-swap (on ``version`` for connections, on
the old ``key_id`` for the others), so a concurrent refresh always wins and is never
overwritten; rows it touched are already under the new key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, update

from tokenkeep.crypto import Keyring
from tokenkeep.errors import EncryptionKeyError
from tokenkeep.store.connection_tokens import ACCESS_TOKEN_FIELD, REFRESH_TOKEN_FIELD
from tokenkeep.store.database import Database, rowcount
from tokenkeep.store.models import (
    ConnectionRow,
    ConnectSessionRow,
    IntegrationRow,
    KeyringCheckRow,
    WebhookEndpointRow,
)

__all__ = ["RotationResult", "rotate_keys", "verify_keyring"]

_CANARY = "tokenkeep keyring canary"
_CANARY_FIELD = "keyring_check.canary"
MAX_ROTATION_PASSES = 5

# (model, primary key column name, {column: field name for associated data}, version column)
_ENCRYPTED: tuple[tuple[Any, str, dict[str, str], str | None], ...] = (
    (
        IntegrationRow,
        "key",
        {
            "client_secret_enc": "integrations.client_secret",
            "private_key_enc": "integrations.private_key",
        },
        None,
    ),
    (
        ConnectionRow,
        "id",
        {"access_token_enc": ACCESS_TOKEN_FIELD, "refresh_token_enc": REFRESH_TOKEN_FIELD},
        "version",
    ),
    (
        ConnectSessionRow,
        "token_hash",
        {"code_verifier_enc": "connect_sessions.code_verifier"},
        None,
    ),
    (WebhookEndpointRow, "id", {"secret_enc": "webhook_endpoints.secret"}, None),
)


async def verify_keyring(db: Database, keyring: Keyring) -> None:
    """Raise :class:`EncryptionKeyError` unless ``keyring`` can read everything stored.

    Records a canary for the primary key on first use, so a later start with a different
    key under the same id is caught before anything is written.
    """
    async with db.read() as session:
        in_use: dict[str, int] = {}
        for model, _pk, _cols, _ver in _ENCRYPTED:
            rows = await session.execute(
                select(model.key_id, func.count())
                .where(model.key_id.is_not(None))
                .group_by(model.key_id)
            )
            for kid, count in rows.all():
                in_use[kid] = in_use.get(kid, 0) + int(count)
        canaries = {
            row.key_id: row.canary_enc for row in (await session.scalars(select(KeyringCheckRow)))
        }
    missing = sorted(kid for kid in in_use if kid not in keyring)
    if missing:
        kid = missing[0]
        raise EncryptionKeyError(
            f"encryption key {kid!r} is missing from {keyring.source}: {in_use[kid]} stored "
            f"row(s) were written with it. Add it back (the keyring holds "
            f"{', '.join(keyring.key_ids)}); tokenkeep will not start without it."
        )
    if canaries and not any(kid in keyring for kid in canaries):
        # Two hosts that each generated their own key on first start would otherwise both
        # start, and each write rows the other can never read.
        raise EncryptionKeyError(
            f"this database was initialised with encryption key(s) "
            f"{', '.join(sorted(canaries))}, and none of them is in {keyring.source} "
            f"(which holds {', '.join(keyring.key_ids)}): give every instance the same "
            f"TOKENKEEP_ENCRYPTION_KEYS; tokenkeep will not start with a foreign key."
        )
    for kid, canary in canaries.items():
        if kid not in keyring:
            continue  # a retired key no row uses any more
        try:
            keyring.decrypt(canary, row_id=kid, field=_CANARY_FIELD)
        except EncryptionKeyError:
            raise EncryptionKeyError(
                f"encryption key {kid!r} in {keyring.source} is not the key this database "
                f"was written with (its canary does not decrypt): restore the original key "
                f"{kid!r}; tokenkeep will not start with a wrong key."
            ) from None
    if keyring.primary_key_id not in canaries:
        await _record_canary(db, keyring)


async def _record_canary(db: Database, keyring: Keyring) -> None:
    kid = keyring.primary_key_id
    try:
        async with db.write() as session:
            existing = await session.get(KeyringCheckRow, kid)
            if existing is None:
                session.add(
                    KeyringCheckRow(
                        key_id=kid,
                        canary_enc=keyring.encrypt(_CANARY, row_id=kid, field=_CANARY_FIELD),
                        created_at=db.clock.now(),
                    )
                )
                return
    except sa_exc.IntegrityError:
        # Another instance starting at the same moment recorded it first (PostgreSQL,
        # read committed): fall through and check that its canary is ours.
        pass
    async with db.read() as session:
        existing = await session.get(KeyringCheckRow, kid)
    if existing is not None:
        try:
            keyring.decrypt(existing.canary_enc, row_id=kid, field=_CANARY_FIELD)
        except EncryptionKeyError:
            raise EncryptionKeyError(
                f"encryption key {kid!r} in {keyring.source} is not the key this database "
                "was written with (its canary does not decrypt)"
            ) from None


@dataclass(frozen=True, slots=True)
class RotationResult:
    """What :func:`rotate_keys` did."""

    primary_key_id: str
    rows_reencrypted: int
    rows_remaining: int


async def rotate_keys(
    db: Database,
    keyring: Keyring,
    new_key_id: str,
    new_key: bytes | None = None,
    *,
    batch_size: int = 200,
) -> RotationResult:
    """Make ``new_key_id`` primary (adding ``new_key`` if new) and re-encrypt every row.

    ``keyring`` is changed in place, so everything sharing it in this process reads and
    writes with the new key at once. Persist the new keyring (keys file or
    ``TOKENKEEP_ENCRYPTION_KEYS``) *before* calling this. Rows a concurrent writer updated
    meanwhile are skipped by the compare-and-swap and retried in a later pass.
    ``rows_remaining`` counts rows still under another key after the last pass.
    """
    keyring.promote(new_key_id, new_key)
    await _record_canary(db, keyring)
    total = 0
    for _ in range(MAX_ROTATION_PASSES):
        done_this_pass = 0
        stale = 0
        for model, pk, cols, version in _ENCRYPTED:
            n, left = await _rotate_table(
                db, keyring, model=model, pk=pk, cols=cols, version=version, batch_size=batch_size
            )
            done_this_pass += n
            stale += left
        total += done_this_pass
        if stale == 0:
            return RotationResult(keyring.primary_key_id, total, 0)
    remaining = await _count_stale(db, keyring)
    return RotationResult(keyring.primary_key_id, total, remaining)


async def _count_stale(db: Database, keyring: Keyring) -> int:
    count = 0
    async with db.read() as session:
        for model, _pk, _cols, _ver in _ENCRYPTED:
            count += int(
                await session.scalar(
                    select(func.count()).where(
                        model.key_id.is_not(None), model.key_id != keyring.primary_key_id
                    )
                )
                or 0
            )
    return count


async def _rotate_table(
    db: Database,
    keyring: Keyring,
    *,
    model: Any,
    pk: str,
    cols: dict[str, str],
    version: str | None,
    batch_size: int,
) -> tuple[int, int]:
    """One keyset-paginated pass over ``model``; returns (rewritten, skipped by CAS)."""
    pk_col = getattr(model, pk)
    primary = keyring.primary_key_id
    rewritten = skipped = 0
    after: str | None = None
    while True:
        query = select(model).where(model.key_id.is_not(None), model.key_id != primary)
        if after is not None:
            query = query.where(pk_col > after)
        query = query.order_by(pk_col).limit(batch_size)
        # One short write transaction per batch: readers never wait long, and a crash
        # loses at most one uncommitted batch (the rows stay readable under the old key).
        async with db.write() as session:
            rows = list((await session.scalars(query)).all())
            if not rows:
                return rewritten, skipped
            for row in rows:
                row_id = getattr(row, pk)
                values: dict[str, Any] = {"key_id": primary}
                for column, field in cols.items():
                    old = getattr(row, column)
                    if old is not None:
                        plain = keyring.decrypt(old, row_id=row_id, field=field)
                        values[column] = keyring.encrypt(plain, row_id=row_id, field=field)
                stmt = update(model).where(pk_col == row_id, model.key_id == row.key_id)
                if version is not None:
                    stmt = stmt.where(getattr(model, version) == getattr(row, version))
                result = await session.execute(
                    stmt.values(**values).execution_options(synchronize_session=False)
                )
                if rowcount(result):
                    rewritten += 1
                else:
                    skipped += 1
            after = getattr(rows[-1], pk)
