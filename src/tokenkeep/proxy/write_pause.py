"""The write pause moved to :mod:`tokenkeep.orgs.write_pause` (org health owns it); this
name stays for existing imports."""

from tokenkeep.orgs.write_pause import (
    Admission,
    EventCallback,
    Outcome,
    WritePause,
    WritePauseGate,
)

__all__ = ["Admission", "EventCallback", "Outcome", "WritePause", "WritePauseGate"]
