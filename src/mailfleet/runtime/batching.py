"""Group commit: many concurrent callers, one transaction for all of them.

Callers :meth:`GroupCommit.submit` an item and wait; one background task
takes everything pending (up to ``max_batch``), runs ``commit`` once for the
batch, and hands each caller its own result or exception. The cost of a
transaction is shared by every caller that waited for it, which is how the
inbound intake and the outbox reach thousands of messages per second on a
single SQLite writer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

__all__ = ["FLEET_CLOSED", "GroupCommit"]

FLEET_CLOSED = "the fleet is not open: use `async with Fleet(...)`"
"""What the fleet's batches answer once closed (or before they start)."""

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Batches ``submit`` calls into calls of ``commit(items) -> outcomes``.

    ``commit`` returns one outcome per item, in order: a result, or the
    exception that item's caller gets. If ``commit`` itself raises, nothing
    was committed and every caller of the batch gets that exception.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]],
        *,
        max_batch: int = 1000,
        closed_error: str = "closed before the item was committed",
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._closed_error = closed_error
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = anyio.Event()
        self._running = False

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is taking submissions."""
        return self._running

    async def submit(self, item: T) -> R:
        """Wait until ``item`` is committed; return its result or raise its error."""
        if not self._running:
            raise RuntimeError(self._closed_error)
        # A bare future of the running loop: the runtime runs on asyncio (aiosmtpd
        # and aiosmtplib need it), and this is the cheapest way to wait per item.
        outcome: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, outcome))
        self._wakeup.set()
        return await outcome

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit submissions until cancelled."""
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                while self._pending:
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    with anyio.CancelScope(shield=True):  # a taken batch is always answered
                        await self._run_batch(batch)
        finally:
            self._running = False
            for _, waiting in self._pending:
                if not waiting.done():
                    waiting.set_exception(RuntimeError(self._closed_error))

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._commit([item for item, _ in batch])
        except Exception as exc:  # nothing was committed
            outcomes = [exc] * len(batch)
        for (_, waiting), outcome in zip(batch, outcomes, strict=True):
            if waiting.done():  # its caller was cancelled; the item is committed all the same
                continue
            if isinstance(outcome, Exception):
                waiting.set_exception(outcome)
            else:
                waiting.set_result(outcome)
