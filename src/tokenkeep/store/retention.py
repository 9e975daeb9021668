"""Operation-log retention: entries older than ``TOKENKEEP_LOG_RETENTION_DAYS`` are deleted.

Every gateway runs it (a :class:`~tokenkeep.periodic.Periodic` step every
``TOKENKEEP_LOG_PRUNE_INTERVAL_SECONDS``, and once at start); each pass deletes in batches of
``TOKENKEEP_LOG_PRUNE_BATCH`` rows, one short transaction per batch, oldest first (index
``ix_operations_at``), so a large backlog never holds a long lock. Two gateways pruning at
once only delete the same old rows: harmless.
"""

from __future__ import annotations

from datetime import timedelta

from tokenkeep.clock import Clock
from tokenkeep.config import Settings
from tokenkeep.observability.logging import get_logger
from tokenkeep.periodic import Periodic
from tokenkeep.store.operations import OperationLog

__all__ = ["LogRetention"]

_log = get_logger("tokenkeep.retention")


class LogRetention:
    """Deletes operation-log entries past the retention period (a gateway service)."""

    def __init__(self, operations: OperationLog, settings: Settings, clock: Clock) -> None:
        self._operations = operations
        self._clock = clock
        self.days = settings.log_retention_days
        self._batch = settings.log_prune_batch
        self._loop = Periodic("log-retention", settings.log_prune_interval_seconds, self.prune)
        #: Entries deleted by this service since it was built.
        self.deleted = 0

    def __repr__(self) -> str:
        return f"LogRetention(days={self.days})"

    async def start(self) -> None:
        """Prune once now, then every interval."""
        try:
            await self.prune()
        except Exception as exc:  # the database away at start: the loop tries again
            _log.warning("retention.prune_failed", error=repr(exc))
        self._loop.start()

    async def stop(self) -> None:
        """Stop the loop."""
        await self._loop.stop()

    async def prune(self) -> int:
        """Delete what is past retention now; returns how many entries went."""
        cutoff = self._clock.now() - timedelta(days=self.days)
        deleted = await self._operations.prune(cutoff, batch=self._batch)
        self.deleted += deleted
        if deleted:
            _log.info("retention.pruned", deleted=deleted, before=cutoff.isoformat())
        return deleted
