"""``RetentionSweeper``: deletes mail past its workspace's retention, a batch at a time.

Each round deletes, oldest first, the inbound messages of the application
older than their grant's policy keeps them (``spam`` folder:
``spam_retention_days``; every other inbound folder: ``inbox_retention_days``;
sent mail and messages still waiting for a handler are kept), in
transactions of at most ``retention_batch_size`` messages, yielding to the
event loop between them, so the intake's and the workers' transactions
never wait long behind it. Each batch gives the grants their bytes back
(``store/storage.py``) and records ``grant.messages_expired`` per grant.

**Once across all workers.** A serving fleet looks every
``retention_sweep_interval / 4`` seconds (a minute at most) whether the
application's round is due; the first worker to claim it (a compare and set
on its ``retention_sweeps`` row, on SQLite and PostgreSQL alike) sweeps, the
others find it taken until the next interval. A worker that dies in a round
leaves the rest to the next one. :meth:`RetentionSweeper.sweep` is the round
itself; ``now`` (the clock the ages are measured against) can be given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ..store import storage
from ..store.outage import Outage
from ..store.scope import Scope

__all__ = ["RetentionSweeper", "SweepReport"]

log = logging.getLogger("mailfleet.retention")

_LONGEST_NAP = 60.0


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep deleted: messages, bytes freed, transactions, and how many grants."""

    deleted: int
    freed_bytes: int
    batches: int
    grants: int


class RetentionSweeper:
    """Sweeps the scope's application; one per serving fleet (and one for direct calls)."""

    def __init__(
        self,
        scope: Scope,
        *,
        interval: float,
        batch_size: int = 500,
        holder: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._scope = scope
        self._interval = interval
        self._batch_size = batch_size
        self._holder = holder[:64]
        self._clock = clock or (lambda: datetime.now(UTC))

    async def sweep(self, *, now: datetime | None = None) -> SweepReport:
        """Delete every message past its retention at ``now`` (default: the clock), in
        batches; return what was deleted."""
        at = now or self._clock()
        deleted = freed = batches = 0
        grants: set[str] = set()
        while True:
            batch = await self._scope.write(
                lambda tx: storage.expired_batch(tx, now=at, limit=self._batch_size)
            )
            batches += 1
            deleted += batch.deleted
            freed += batch.freed_bytes
            grants.update(batch.grants)
            if batch.deleted < self._batch_size:
                break
            await anyio.lowlevel.checkpoint()  # the others' transactions go first
        report = SweepReport(deleted, freed, batches, len(grants))
        if deleted:
            log.info(
                "retention sweep deleted %d messages of %d grants (%d bytes) in %d batches",
                deleted,
                len(grants),
                freed,
                batches,
                extra={"deleted": deleted, "freed_bytes": freed},
            )
        return report

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Sweep each round this worker claims, until cancelled (never with interval 0)."""
        task_status.started()
        interval = self._interval
        if interval <= 0:
            return
        nap = min(max(interval / 4, 0.05), _LONGEST_NAP)
        log.info("sweeping expired mail every %g s", interval)
        outage = Outage("retention sweep", log)
        while True:
            try:
                claimed = await self._scope.write(
                    lambda tx: storage.claim_sweep(
                        tx, now=time.time(), interval=interval, holder=self._holder
                    )
                )
                if claimed:
                    await self.sweep()
            except Exception as exc:  # tried again after the nap (longer while it fails)
                await anyio.sleep(max(outage.failed(exc), nap))
                continue
            outage.succeeded()
            await anyio.sleep(nap)
