"""Salesforce-shaped identifiers: 15-character ids, their 18-character form, and secrets."""

from __future__ import annotations

import random
import string

__all__ = ["IdFactory", "to18"]

_ALNUM = string.ascii_letters + string.digits
_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def to18(id15: str) -> str:
    """The case-insensitive 18-character form of a 15-character Salesforce id.

    Salesforce appends one character per 5-character chunk that encodes which characters of
    the chunk are upper case, so ids survive case-insensitive systems.
    """
    if len(id15) != 15:
        raise ValueError("a Salesforce id has 15 characters before its checksum")
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << i
        suffix += _SUFFIX[bits]
    return id15 + suffix


class IdFactory:
    """Deterministic (with a seed) ids and credentials for orgs, users and apps."""

    def __init__(self, seed: int | None) -> None:
        # A seeded PRNG only shapes fixture identities (ids, client ids, passwords) so a
        # `--seed` run is reproducible; tokens use `secrets` (see state.py).
        self._rng = random.Random(seed)

    def chars(self, n: int, alphabet: str = _ALNUM) -> str:
        """``n`` random characters from ``alphabet``."""
        return "".join(self._rng.choice(alphabet) for _ in range(n))

    def sf_id(self, prefix: str) -> str:
        """An 18-character id with a 3-character key prefix (``00D``, ``005``, ...)."""
        # Real ids: prefix (3), pod (2), zeros, then a base-62 counter; close enough.
        return to18(
            prefix
            + self.chars(2, string.digits + string.ascii_lowercase)
            + "0000"
            + self.chars(6, string.ascii_uppercase + string.digits)
        )

    def consumer_key(self) -> str:
        """A connected-app consumer key, shaped like Salesforce's ``3MVG9...``."""
        return "3MVG9" + self.chars(80, _ALNUM + "._")

    def secret(self, n: int = 64) -> str:
        """A consumer secret or password (hex upper case, like Salesforce's secrets)."""
        return self.chars(n, "0123456789ABCDEF")
