"""Encryption at rest: a keyring of AES-256-GCM keys.

Ciphertext format (version 1), one ASCII string per value::

    v1.<key id>.<base64url(nonce[12] | ciphertext | tag[16])>

* a fresh random 96-bit nonce per value;
* the key id travels inside the value, so a keyring holding several keys knows which one
  to use (the first key is the *primary*: new writes use it, the others stay readable);
* the associated data binds the value to ``(row id, field)``: a ciphertext copied into
  another row or another column fails to decrypt (:class:`~tokenkeep.errors.EncryptionKeyError`).

Key material comes from ``TOKENKEEP_ENCRYPTION_KEYS`` -- comma-separated
``<key id>:<base64url of 32 random bytes>``, primary first, e.g.
``k2:AbC...,k1:XyZ...`` -- or, when that variable is unset, from the file
``<data dir>/encryption-keys`` (same format, created with mode 0600 on first start).
Key ids are 1-32 characters of ``[A-Za-z0-9_-]``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tokenkeep.errors import EncryptionKeyError
from tokenkeep.secret import Secret

if TYPE_CHECKING:
    from tokenkeep.config import Settings

__all__ = [
    "KEYS_FILE_NAME",
    "Keyring",
    "ciphertext_key_id",
    "load_or_create_keyring",
    "new_key_bytes",
    "new_key_id",
    "write_keys_file",
]

KEYS_FILE_NAME = "encryption-keys"
_VERSION = "v1"
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_NONCE_BYTES = 12
_KEY_BYTES = 32


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    # Strict: a stray character is an error, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _associated_data(row_id: str, field: str) -> bytes:
    # Length-prefixed so ("a:b", "c") and ("a", "b:c") can never collide.
    row = row_id.encode()
    name = field.encode()
    return b"tokenkeep/v1|%d:%s|%d:%s" % (len(row), row, len(name), name)


def ciphertext_key_id(value: str) -> str:
    """The key id a stored value was encrypted with (no key needed)."""
    parts = value.split(".", 2)
    if len(parts) != 3 or parts[0] != _VERSION or not _KEY_ID.match(parts[1]):
        raise EncryptionKeyError("a stored value is not a tokenkeep ciphertext (unknown format)")
    return parts[1]


class Keyring:
    """Named AES-256-GCM keys; the first is primary (used for every new write).

    Safe to share between tasks and threads: :meth:`promote` swaps the key table in one
    assignment, so a read in flight during a rotation sees both the old and the new key.
    ``repr`` shows key ids only, never key bytes.
    """

    __slots__ = ("_aead", "_file_stamp", "_lock", "_order", "_raw", "keys_file", "source")

    def __init__(
        self, keys: Iterable[tuple[str, bytes]], *, source: str = "TOKENKEEP_ENCRYPTION_KEYS"
    ) -> None:
        #: Where the keys came from (the variable or the keys file), for error messages.
        self.source = source
        #: The keys file this keyring was loaded from, if any: re-read when a value names a
        #: key id we do not hold, so ``tokenkeep keys rotate`` run in another process is
        #: picked up by a running gateway without a restart; and when it changed before a
        #: write, so a process that only writes never keeps writing with a retired primary.
        self.keys_file: Path | None = None
        self._file_stamp: tuple[int, int] | None = None
        order: list[str] = []
        raw: dict[str, bytes] = {}
        for kid, material in keys:
            _check_key(kid, material)
            if kid in raw:
                raise EncryptionKeyError(f"encryption key id {kid!r} appears twice")
            order.append(kid)
            raw[kid] = bytes(material)
        if not order:
            raise EncryptionKeyError("the keyring holds no encryption key")
        self._order: tuple[str, ...] = tuple(order)
        self._raw: dict[str, bytes] = raw
        self._aead: dict[str, AESGCM] = {kid: AESGCM(m) for kid, m in raw.items()}
        self._lock = threading.Lock()

    # -- construction -------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, *, source: str = "TOKENKEEP_ENCRYPTION_KEYS") -> Keyring:
        """Parse ``kid:base64url-32-bytes[,kid:...]`` (primary first)."""
        keys: list[tuple[str, bytes]] = []
        for index, item in enumerate(p.strip() for p in text.split(",")):
            if not item:
                continue
            kid, sep, material = item.partition(":")
            if not sep:
                raise EncryptionKeyError(
                    f"{source} entry {index + 1} is not '<key id>:<base64url key>'"
                )
            try:
                raw = _b64d(material.strip())
            except (binascii.Error, ValueError):
                raise EncryptionKeyError(
                    f"{source}: key {kid.strip()!r} is not valid base64url"
                ) from None
            keys.append((kid.strip(), raw))
        if not keys:
            raise EncryptionKeyError(f"{source} holds no key")
        return cls(keys, source=source)

    @classmethod
    def generate(cls, key_id: str | None = None) -> Keyring:
        """A keyring with one fresh random key (id ``k<8 hex>`` unless given)."""
        return cls([(key_id or new_key_id(), new_key_bytes())])

    # -- inspection -----------------------------------------------------------------------
    @property
    def primary_key_id(self) -> str:
        """The id of the key new values are written with."""
        return self._order[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id, primary first."""
        return self._order

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._aead

    def __repr__(self) -> str:
        return f"Keyring(primary={self._order[0]!r}, key_ids={list(self._order)!r})"

    def export(self) -> Secret:
        """This keyring as ``TOKENKEEP_ENCRYPTION_KEYS`` text (a :class:`Secret`)."""
        return Secret(",".join(f"{kid}:{_b64e(self._raw[kid])}" for kid in self._order))

    # -- change ---------------------------------------------------------------------------
    def promote(self, key_id: str, key: bytes | None = None) -> None:
        """Make ``key_id`` primary, adding it (with ``key``) if new; old keys stay readable."""
        with self._lock:
            raw = dict(self._raw)
            aead = dict(self._aead)
            if key_id not in raw:
                if key is None:
                    raise EncryptionKeyError(f"key {key_id!r} is not in the keyring")
                _check_key(key_id, key)
                raw[key_id] = bytes(key)
                aead[key_id] = AESGCM(key)
            elif key is not None and not secrets.compare_digest(raw[key_id], key):
                raise EncryptionKeyError(f"key id {key_id!r} is already used by another key")
            # Add the key before it becomes primary so no reader ever meets an unknown id.
            self._raw = raw
            self._aead = aead
            self._order = (key_id, *(k for k in self._order if k != key_id))

    def reload(self) -> None:
        """Adopt the keys file's current keys and primary (no-op without a keys file).

        Keys already held stay readable even if the file dropped them: a running process
        never loses the ability to read what it could read before.
        """
        if self.keys_file is None or not self.keys_file.exists():
            return
        stamp = _stamp(self.keys_file)
        fresh = Keyring.parse(
            self.keys_file.read_text(encoding="ascii").strip(), source=str(self.keys_file)
        )
        with self._lock:
            raw = dict(self._raw)
            aead = dict(self._aead)
            for kid in fresh._order:
                if kid not in raw:
                    raw[kid] = fresh._raw[kid]
                    aead[kid] = fresh._aead[kid]
            self._raw = raw
            self._aead = aead
            self._order = (*fresh._order, *(k for k in self._order if k not in fresh._order))
            self._file_stamp = stamp

    # -- use ----------------------------------------------------------------------------
    def encrypt(self, plaintext: str, *, row_id: str, field: str) -> str:
        """Encrypt with the primary key, bound to ``(row_id, field)``.

        With a keys file, a change of the file (``tokenkeep keys rotate`` in another
        process) is adopted first: one ``stat`` per write.
        """
        if self.keys_file is not None:
            try:
                changed = _stamp(self.keys_file) != self._file_stamp
            except OSError:
                changed = False  # the file is away: keep the keys we hold
            if changed:
                try:
                    self.reload()
                except EncryptionKeyError:
                    pass  # a file we cannot parse: keep the keys we hold (the start checks)
        kid = self._order[0]
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead[kid].encrypt(
            nonce, plaintext.encode("utf-8"), _associated_data(row_id, field)
        )
        return f"{_VERSION}.{kid}.{_b64e(nonce + sealed)}"

    def decrypt(self, value: str, *, row_id: str, field: str) -> str:
        """Decrypt a value written by :meth:`encrypt` for the same ``(row_id, field)``.

        Raises :class:`EncryptionKeyError` naming the key id (never the key) when the key
        is missing, wrong, or the value belongs to another row or field.
        """
        kid = ciphertext_key_id(value)
        aead = self._aead.get(kid)
        if aead is None and self.keys_file is not None:
            self.reload()
            aead = self._aead.get(kid)
        if aead is None:
            raise EncryptionKeyError(
                f"stored data was encrypted with key {kid!r}, which is missing from "
                f"{self.source}; add it back to read the data"
            )
        try:
            blob = _b64d(value.split(".", 2)[2])
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"{field} of {row_id!r} is corrupt (bad base64)") from None
        try:
            plain = aead.decrypt(
                blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _associated_data(row_id, field)
            )
        except InvalidTag:
            raise EncryptionKeyError(
                f"cannot decrypt {field} of {row_id!r} with key {kid!r}: the key is wrong, "
                "or the value was copied from another row or field"
            ) from None
        return plain.decode("utf-8")


def _stamp(path: Path) -> tuple[int, int]:
    """What tells a rewritten keys file apart (it is replaced by a rename)."""
    st = path.stat()
    return (st.st_mtime_ns, st.st_ino)


def _check_key(kid: str, material: bytes) -> None:
    if not _KEY_ID.match(kid):
        raise EncryptionKeyError(
            f"encryption key id {kid!r} is invalid: use 1-32 letters, digits, '_' or '-'"
        )
    if len(material) != _KEY_BYTES:
        raise EncryptionKeyError(
            f"encryption key {kid!r} must be {_KEY_BYTES} bytes (got {len(material)})"
        )


def new_key_id() -> str:
    """A fresh random key id (``k`` + 8 hex digits)."""
    return "k" + secrets.token_hex(4)


def new_key_bytes() -> bytes:
    """32 fresh random bytes: one AES-256 key."""
    return secrets.token_bytes(_KEY_BYTES)


def write_keys_file(path: Path, keyring: Keyring) -> None:
    """Write ``keyring`` to ``path`` with mode 0600, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(keyring.export().reveal() + "\n")
    os.replace(tmp, path)


def load_or_create_keyring(settings: Settings) -> Keyring:
    """The keyring from ``TOKENKEEP_ENCRYPTION_KEYS``, else from the data dir's keys file.

    On first start (no variable, no file) a key is generated and written to
    ``<data dir>/encryption-keys`` (0600). Whether the keyring can read the stored data is
    checked later against the database (:func:`tokenkeep.store.verify_keyring`).
    """
    if settings.encryption_keys is not None and settings.encryption_keys.get_secret_value():
        return Keyring.parse(settings.encryption_keys.get_secret_value())
    path = settings.data_dir / KEYS_FILE_NAME
    if path.exists():
        stamp = _stamp(path)
        keyring = Keyring.parse(path.read_text(encoding="ascii").strip(), source=str(path))
    else:
        keyring = Keyring([(new_key_id(), new_key_bytes())], source=str(path))
        write_keys_file(path, keyring)
        stamp = _stamp(path)
    keyring.keys_file = path
    keyring._file_stamp = stamp
    return keyring
