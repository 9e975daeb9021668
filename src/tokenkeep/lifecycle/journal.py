"""The refresh journal: a token answer kept on local disk until the database has it.

Never lose a refresh token: with rotation, the answer of a refresh holds the ONLY
refresh token that still works. :class:`RefreshJournal` keeps such an answer in
``<data dir>/refresh-journal/`` -- one file per connection, the whole answer encrypted with
the store's keyring (AES-256-GCM, associated data ``(connection id,
"refresh_journal")``), written to a temporary file, fsynced, renamed over the old one and
the directory fsynced -- so it survives a database outage and the process. The
lifecycle writes it synchronously (nothing awaited) as the first thing after a rotating
answer, and after the first failed commit of any other answer; it deletes it once the
answer is committed (or fenced off by a newer stored token). Every refresh looks at it
first and a starting gateway replays it (:mod:`tokenkeep.lifecycle.durable`).

Files are found by a hash of the connection id (ids are free text), in a folder named by
a hash of the database URL (without password); the plaintext
connection id and read version sit next to the ciphertext so a replay can check the row
before decrypting. Several gateway processes sharing a data dir share the journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tokenkeep.crypto import Keyring
from tokenkeep.errors import EncryptionKeyError
from tokenkeep.oauth.models import TokenResponse
from tokenkeep.observability.logging import get_logger
from tokenkeep.secret import Secret

__all__ = ["JOURNAL_DIR_NAME", "JournalEntry", "RefreshJournal"]

JOURNAL_DIR_NAME = "refresh-journal"
_FIELD = "refresh_journal"
_FORMAT = 1
_log = get_logger("tokenkeep.lifecycle.journal")


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One uncommitted token answer: what :func:`~tokenkeep.lifecycle.persist.
    commit_refresh` needs to store it on the row read at ``read_version``."""

    connection_id: str
    read_version: int
    response: TokenResponse
    used_refresh_token: Secret | None
    expires_at: datetime
    next_refresh_at: datetime
    grant: str
    written_at: float  # our clock, epoch seconds

    def plaintext(self) -> str:
        r = self.response
        return json.dumps(
            {
                "access_token": r.access_token.reveal(),
                "refresh_token": r.refresh_token.reveal() if r.refresh_token else None,
                "used_refresh_token": (
                    self.used_refresh_token.reveal() if self.used_refresh_token else None
                ),
                "instance_url": r.instance_url,
                "received_at": r.received_at,
                "id_url": r.id_url,
                "org_id": r.org_id,
                "user_id": r.user_id,
                "issued_at_ms": r.issued_at_ms,
                "signature_mismatch": r.signature_mismatch,
                "scope": r.scope,
                "token_type": r.token_type,
                "local_address": r.local_address,
                "expires_at": self.expires_at.isoformat(),
                "next_refresh_at": self.next_refresh_at.isoformat(),
                "grant": self.grant,
                "written_at": self.written_at,
            }
        )

    @classmethod
    def parse(cls, connection_id: str, read_version: int, text: str) -> JournalEntry:
        d: dict[str, Any] = json.loads(text)
        response = TokenResponse(
            access_token=Secret(d["access_token"]),
            refresh_token=Secret(d["refresh_token"]) if d["refresh_token"] else None,
            instance_url=d["instance_url"],
            received_at=float(d["received_at"]),
            id_url=d["id_url"],
            org_id=d["org_id"],
            user_id=d["user_id"],
            issued_at_ms=d["issued_at_ms"],
            signature_mismatch=bool(d["signature_mismatch"]),
            scope=d["scope"],
            token_type=d["token_type"],
            local_address=d["local_address"],
        )
        used = d["used_refresh_token"]
        return cls(
            connection_id=connection_id,
            read_version=read_version,
            response=response,
            used_refresh_token=Secret(used) if used else None,
            expires_at=datetime.fromisoformat(d["expires_at"]),
            next_refresh_at=datetime.fromisoformat(d["next_refresh_at"]),
            grant=str(d["grant"]),
            written_at=float(d["written_at"]),
        )


class RefreshJournal:
    """Uncommitted token answers on local disk, encrypted with ``keyring``."""

    def __init__(self, data_dir: Path, keyring: Keyring, *, database: str = "") -> None:
        # One folder per database (its password-free URL): gateways of two databases that
        # share a data dir never see each other's connections.
        space = hashlib.sha256(database.encode()).hexdigest()[:16]
        self.folder = data_dir / JOURNAL_DIR_NAME / space
        self._keyring = keyring

    def __repr__(self) -> str:
        return f"RefreshJournal({str(self.folder)!r})"

    def _path(self, connection_id: str) -> Path:
        digest = hashlib.sha256(connection_id.encode()).hexdigest()[:32]
        return self.folder / f"{digest}.json"

    def write(self, entry: JournalEntry) -> None:
        """Store ``entry`` durably (fsynced file and directory). Blocking, on purpose: it
        runs between a token answer and its commit, where nothing may be awaited. Raises
        ``OSError`` when the disk refuses."""
        sealed = self._keyring.encrypt(entry.plaintext(), row_id=entry.connection_id, field=_FIELD)
        body = json.dumps(
            {
                "format": _FORMAT,
                "connection_id": entry.connection_id,
                "read_version": entry.read_version,
                "sealed": sealed,
            }
        ).encode()
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(entry.connection_id)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self, connection_id: str) -> JournalEntry | None:
        """The journaled answer of ``connection_id``, or None (none, or unreadable)."""
        return self._load(self._path(connection_id))

    def entries(self) -> list[JournalEntry]:
        """Every readable entry (an unreadable file is logged and left in place)."""
        if not self.folder.is_dir():
            return []
        found = (self._load(p) for p in sorted(self.folder.glob("*.json")))
        return [e for e in found if e is not None]

    def discard(self, connection_id: str, read_version: int) -> None:
        """Delete the entry of ``connection_id`` if it is still the one for
        ``read_version`` (a newer answer journaled meanwhile stays)."""
        path = self._path(connection_id)
        head = self._head(path)
        if head is None or head[1] != read_version:
            return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only when empty: leave no trace once all is committed

    def _head(self, path: Path) -> tuple[dict[str, Any], int] | None:
        try:
            body: dict[str, Any] = json.loads(path.read_bytes())
            return body, int(body["read_version"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.error("unreadable refresh journal file", path=str(path), error=str(exc))
            return None

    def _load(self, path: Path) -> JournalEntry | None:
        head = self._head(path)
        if head is None:
            return None
        body, read_version = head
        connection_id = str(body.get("connection_id"))
        try:
            text = self._keyring.decrypt(str(body["sealed"]), row_id=connection_id, field=_FIELD)
            return JournalEntry.parse(connection_id, read_version, text)
        except (EncryptionKeyError, ValueError, KeyError, TypeError) as exc:
            _log.error(
                "refresh journal entry cannot be read; left in place",
                connection_id=connection_id,
                error=str(exc),
            )
            return None
