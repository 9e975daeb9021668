"""The :data:`KEEP` marker: "leave this stored value as it is" in update calls."""

from __future__ import annotations

import enum

__all__ = ["KEEP", "Keep"]


class Keep(enum.Enum):
    """Type of :data:`KEEP` (an enum so type checkers can narrow on it)."""

    KEEP = "keep"

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep.KEEP
