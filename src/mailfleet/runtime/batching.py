"""Group commit: many concurrent callers, one transaction for all of them.

Callers :meth:`GroupCommit.submit` an item and wait; one background task
takes everything pending (up to ``max_batch``), runs ``commit`` once for the
batch, and hands each caller its own result or exception. The cost of a
transaction is shared by every caller that waited for it, which is how the
inbound intake and the outbox reach thousands of messages per second on a
single SQLite writer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskStatus

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True, eq=False)
class _Waiting(Generic[T, R]):
    item: T
    done: anyio.Event = field(default_factory=anyio.Event)
    outcome: R | Exception | None = None


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
        self._pending: list[_Waiting[T, R]] = []
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
        waiting: _Waiting[T, R] = _Waiting(item)
        self._pending.append(waiting)
        self._wakeup.set()
        await waiting.done.wait()
        if isinstance(waiting.outcome, Exception):
            raise waiting.outcome
        return waiting.outcome  # type: ignore[return-value]

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
            for waiting in self._pending:
                waiting.outcome = RuntimeError(self._closed_error)
                waiting.done.set()

    async def _run_batch(self, batch: list[_Waiting[T, R]]) -> None:
        try:
            outcomes = await self._commit([waiting.item for waiting in batch])
        except Exception as exc:  # nothing was committed
            outcomes = [exc] * len(batch)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.outcome = outcome
            waiting.done.set()
