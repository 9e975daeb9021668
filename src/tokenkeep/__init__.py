"""tokenkeep: a self-hosted auth gateway that keeps every customer's Salesforce session alive.

The public surface is small: this package and :mod:`tokenkeep.client`. Everything else may
change between releases.
"""

from tokenkeep.__about__ import __version__
from tokenkeep.clock import Clock, ManualClock, OffsetClock, SystemClock
from tokenkeep.errors import TokenkeepError
from tokenkeep.secret import Secret

__all__ = [
    "Clock",
    "ManualClock",
    "OffsetClock",
    "Secret",
    "SystemClock",
    "TokenkeepError",
    "__version__",
]
