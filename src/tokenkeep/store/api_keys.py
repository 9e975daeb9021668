"""Control-plane API keys: ``tk_`` + 32 random bytes, stored only as a SHA-256 hash.

Verified keys are cached in-process (:mod:`.api_key_cache`): a revoke or delete here is
refused at once in this process, and within ``TOKENKEEP_API_KEY_RECHECK_SECONDS`` (0.5 s)
in every other one (their :class:`~tokenkeep.store.api_key_cache.ApiKeyRecheck`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import delete, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from tokenkeep.clock import Clock
from tokenkeep.errors import NotFoundError
from tokenkeep.secret import Secret
from tokenkeep.store.api_key_cache import ApiKeyRecheck, VerifiedKeyCache
from tokenkeep.store.database import Database
from tokenkeep.store.models import ApiKeyRow
from tokenkeep.store.records import ApiKey, CreatedApiKey

__all__ = [
    "BOOTSTRAP_KEY_ID",
    "ENV_KEY_ID",
    "SECRET_KEY_FILE_NAME",
    "ApiKeyRepository",
    "hash_api_key",
]

PREFIX = "tk_"
PREFIX_SHOWN = 10  # "tk_" + 7 characters: enough to tell keys apart in a list
BOOTSTRAP_KEY_ID = "bootstrap"
ENV_KEY_ID = "env"
SECRET_KEY_FILE_NAME = "secret-key"
# Digests per ``IN (...)`` of a recheck (well under SQLite's bound-parameter limit).
_RECHECK_CHUNK = 500
# last_used_at is bookkeeping: at most one write per key per minute.
LAST_USED_RESOLUTION_SECONDS = 60.0


def hash_api_key(plaintext: str) -> str:
    """The stored form of a key: hex SHA-256 (the key is 256 random bits: no salt needed)."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def new_api_key_secret() -> str:
    """A fresh ``tk_...`` secret."""
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _record(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class ApiKeyRepository:
    """Create, verify, list and revoke API keys."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self.cache = VerifiedKeyCache(clock)

    def recheck_service(self, interval_seconds: float) -> ApiKeyRecheck:
        """The background recheck of this repository's cache (a gateway service)."""
        return ApiKeyRecheck(self.cache, self.still_valid, interval_seconds)

    def cached(self, plaintext: str) -> ApiKey | None:
        """The key if this process verified it recently and no recheck has dropped it
        (synchronous, no I/O: the proxy's hot path). ``None`` means "ask :meth:`verify`"."""
        return self.cache.get(hash_api_key(plaintext)) if plaintext else None

    async def still_valid(self, digests: Sequence[str]) -> set[str]:
        """The subset of ``digests`` (hex SHA-256) that are live keys: one indexed read."""
        valid: set[str] = set()
        async with self._db.read() as session:
            for start in range(0, len(digests), _RECHECK_CHUNK):
                chunk = digests[start : start + _RECHECK_CHUNK]
                rows = await session.scalars(
                    select(ApiKeyRow.key_hash).where(
                        ApiKeyRow.key_hash.in_(chunk), ApiKeyRow.revoked_at.is_(None)
                    )
                )
                valid.update(rows)
        return valid

    async def create(self, name: str, *, key_id: str | None = None) -> CreatedApiKey:
        """A new key; the returned ``secret`` is the only time the plaintext exists."""
        plaintext = new_api_key_secret()
        row = await self._store(name, plaintext, key_id or "key_" + secrets.token_hex(8))
        return CreatedApiKey(key=_record(row), secret=Secret(plaintext))

    async def _store(self, name: str, plaintext: str, key_id: str) -> ApiKeyRow:
        row = ApiKeyRow(
            id=key_id,
            name=name,
            prefix=plaintext[:PREFIX_SHOWN],
            key_hash=hash_api_key(plaintext),
            created_at=self._clock.now(),
            last_used_at=None,
            revoked_at=None,
        )
        async with self._db.write() as session:
            session.add(row)
        return row

    async def verify(self, plaintext: str | Secret) -> ApiKey | None:
        """The key matching ``plaintext``, or ``None`` (unknown or revoked)."""
        text = plaintext.reveal() if isinstance(plaintext, Secret) else plaintext
        if not text:
            return None
        digest = hash_api_key(text)
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        ticket = self.cache.ticket()
        async with self._db.read() as session:
            row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest))
        # The lookup is by hash; compare again in constant time so a hypothetical
        # collation or truncation quirk can never turn a near-match into a match.
        if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
            self.cache.discard(digest)
            return None
        key = _record(row)
        self.cache.put(digest, key, ticket)
        now = self._clock.now()
        if (
            row.last_used_at is None
            or (now - row.last_used_at).total_seconds() >= LAST_USED_RESOLUTION_SECONDS
        ):
            async with self._db.write() as session:
                await session.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == row.id).values(last_used_at=now)
                )
        return key

    async def list(self) -> list[ApiKey]:
        """Every key (revoked ones too), oldest first."""
        async with self._db.read() as session:
            rows = (await session.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))).all()
        return [_record(r) for r in rows]

    async def revoke(self, id_or_prefix: str) -> ApiKey:
        """Revoke by id or shown prefix (``NotFoundError`` if none matches exactly one)."""
        async with self._db.write() as session:
            row = await _one(session, id_or_prefix)
            if row.revoked_at is None:
                row.revoked_at = self._clock.now()
            key, digest = _record(row), row.key_hash
        self.cache.discard(digest)  # after the commit: a verify in flight cannot re-add it
        return key

    async def delete(self, id_or_prefix: str) -> ApiKey:
        """Delete by id or shown prefix (``NotFoundError`` if none matches exactly one);
        the key is refused from now on, like a revoked one, and gone from :meth:`list`."""
        async with self._db.write() as session:
            row = await _one(session, id_or_prefix)
            key, digest = _record(row), row.key_hash
            await session.execute(delete(ApiKeyRow).where(ApiKeyRow.id == row.id))
        self.cache.discard(digest)
        return key

    async def accept_env_key(self, plaintext: str) -> None:
        """Make ``TOKENKEEP_SECRET_KEY`` a valid key (replacing a previous env value)."""
        digest = hash_api_key(plaintext)
        async with self._db.write() as session:
            row = await session.get(ApiKeyRow, ENV_KEY_ID)
            if row is None:
                session.add(
                    ApiKeyRow(
                        id=ENV_KEY_ID,
                        name="TOKENKEEP_SECRET_KEY",
                        prefix=plaintext[:PREFIX_SHOWN] if plaintext.startswith(PREFIX) else "env",
                        key_hash=digest,
                        created_at=self._clock.now(),
                        last_used_at=None,
                        revoked_at=None,
                    )
                )
            elif row.key_hash != digest:
                self.cache.discard(row.key_hash)
                row.key_hash = digest
                row.revoked_at = None

    async def create_bootstrap_key(self, data_dir: Path) -> Secret | None:
        """On first start only: a key named ``bootstrap`` whose plaintext is returned once
        and also written to ``<data dir>/secret-key`` (0600). ``None`` if one ever existed
        (even revoked) or another process created it first."""
        async with self._db.read() as session:
            if await session.get(ApiKeyRow, BOOTSTRAP_KEY_ID) is not None:
                return None
        plaintext = new_api_key_secret()
        try:
            await self._store("bootstrap", plaintext, BOOTSTRAP_KEY_ID)
        except sa_exc.IntegrityError:
            return None
        _write_private(data_dir / SECRET_KEY_FILE_NAME, plaintext)
        return Secret(plaintext)


async def _one(session: AsyncSession, id_or_prefix: str) -> ApiKeyRow:
    rows = (
        await session.scalars(
            select(ApiKeyRow).where(
                or_(ApiKeyRow.id == id_or_prefix, ApiKeyRow.prefix == id_or_prefix)
            )
        )
    ).all()
    if len(rows) != 1:
        raise NotFoundError(f"no single API key matches {id_or_prefix!r}")
    return rows[0]


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(text + "\n")
    os.replace(tmp, path)
