"""A type for secrets: ``repr`` and ``str`` never show the value; unwrapping is explicit."""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["Secret", "fingerprint"]


def fingerprint(value: str) -> str:
    """A short, stable, non-reversible tag for a secret (safe to show and log)."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


class Secret:
    """Wraps a secret string. ``str(s)``, ``repr(s)`` and f-strings show ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Call it only where the value leaves for its one destination."""
        return self._value

    @property
    def fingerprint(self) -> str:
        return fingerprint(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Secret):
            import hmac

            return hmac.compare_digest(self._value.encode(), other._value.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("Secret values are not picklable")
