"""Per-key ordered dispatch: one mailbox per grant, at most one handler per grant.

The dispatcher is an actor scheduler. Each key (a grant id) that has work owns
a :class:`_Mailbox` (a deque); keys with work wait in one ready queue; a fixed
set of runner tasks (the concurrency limit) take a key, run up to ``batch``
of its items in order, and put it back at the end of the ready queue if more
remain. So:

* items of one key run in order, never two at once (a key is in the ready
  queue or held by one runner, never both);
* keys share the runners fairly, and a slow key holds one runner, not all;
* a key without work costs nothing: no task, no mailbox. Mailboxes of keys
  idle for ``idle_timeout`` are dropped and ``deactivate(key)`` is awaited;
* ``handle(key, item)`` may return a delay in seconds: the item goes back to
  the front of its mailbox and the key is parked until then (retry with
  backoff without breaking the order).

Draining a deque and reading the ready queue without awaiting when there is
work keeps the cost per item close to a plain ``asyncio.Queue`` consumer.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ..model.errors import QueueFull, StoreUnavailable
from ..store.outage import Outage

__all__ = ["Dispatcher", "DispatcherStatistics", "QueueFull"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DispatcherStatistics:
    """A snapshot of the dispatcher."""

    active_keys: int
    """Keys with a mailbox (work queued, running, or recently active)."""
    queued: int
    """Items waiting in all mailboxes."""
    ready_keys: int
    """Keys waiting for a runner."""
    running: int
    """Handlers running now."""
    parked_keys: int
    """Keys waiting for a retry delay to pass."""
    handled: int
    """Items handled since start."""


class _Mailbox(Generic[T]):
    __slots__ = ("items", "last_active", "parked", "scheduled")

    def __init__(self) -> None:
        self.items: deque[T] = deque()
        self.scheduled = False  # in the ready queue, held by a runner, or parked
        self.parked = False
        self.last_active = 0.0


Handler = Callable[[K, T], Awaitable[float | None]]


class Dispatcher(Generic[K, T]):
    """Ordered, bounded, per-key dispatch of items to ``handle``.

    ``handle`` must not raise (the runtime wraps user code); if it does, the
    error is logged and the item counts as handled, except for a
    :class:`~mailfleet.StoreUnavailable`: the item is kept and tried again with
    the backoff of a store outage.
    """

    def __init__(
        self,
        handle: Handler[K, T],
        *,
        concurrency: int = 64,
        queue_limit: int = 1000,
        batch: int = 32,
        idle_timeout: float = 60.0,
        deactivate: Callable[[K], Awaitable[None]] | None = None,
    ) -> None:
        if concurrency < 1 or queue_limit < 1 or batch < 1:
            raise ValueError("concurrency, queue_limit and batch must be at least 1")
        self._handle = handle
        self._concurrency = concurrency
        self._queue_limit = queue_limit
        self._batch = batch
        self._idle_timeout = idle_timeout
        self._deactivate = deactivate
        self._mailboxes: dict[K, _Mailbox[T]] = {}
        self._ready: deque[K] = deque()
        self._parked: list[tuple[float, int, K]] = []
        self._parked_seq = 0
        self._sleepers: list[anyio.Event] = []
        self._timer_wakeup = anyio.Event()
        self._idle_waiters: list[anyio.Event] = []
        self._closing = False
        self._running = 0
        self._handled = 0
        self._outage = Outage("dispatching", log)
        self._queued = 0

    # -- producers ----------------------------------------------------------------

    def put_nowait(self, key: K, item: T) -> None:
        """Queue ``item`` for ``key``; raise :class:`QueueFull` at the limit."""
        box = self._mailboxes.get(key)
        if box is None:
            box = self._mailboxes[key] = _Mailbox()
        elif len(box.items) >= self._queue_limit:
            raise QueueFull(str(key), self._queue_limit)
        box.items.append(item)
        self._queued += 1
        if not box.scheduled:
            box.scheduled = True
            self._make_ready(key)

    def queued(self, key: K) -> int:
        """Items waiting for ``key``."""
        box = self._mailboxes.get(key)
        return 0 if box is None else len(box.items)

    def has_room(self, key: K) -> bool:
        """Whether ``put_nowait(key, ...)`` would be accepted now."""
        return self.queued(key) < self._queue_limit

    def discard(self, key: K) -> int:
        """Drop every item queued for ``key`` (a grant was torn down); return how many."""
        box = self._mailboxes.get(key)
        if box is None:
            return 0
        dropped = len(box.items)
        box.items.clear()
        self._queued -= dropped
        self._notify_idle()
        return dropped

    def statistics(self) -> DispatcherStatistics:
        """A snapshot of queue depths and activity."""
        return DispatcherStatistics(
            active_keys=len(self._mailboxes),
            queued=self._queued,
            ready_keys=len(self._ready),
            running=self._running,
            parked_keys=len(self._parked),
            handled=self._handled,
        )

    @property
    def idle(self) -> bool:
        """Whether nothing is queued or running."""
        return self._queued == 0 and self._running == 0

    async def wait_idle(self) -> None:
        """Wait until nothing is queued or running."""
        if not self.idle:
            waiter = anyio.Event()
            self._idle_waiters.append(waiter)
            await waiter.wait()

    def close(self) -> None:
        """Stop starting handlers; those running finish, queued items stay queued."""
        self._closing = True
        self._notify_idle()

    async def wait_stopped(self) -> None:
        """After :meth:`close`, wait until no handler is running."""
        while self._running:
            waiter = anyio.Event()
            self._idle_waiters.append(waiter)
            await waiter.wait()

    def _notify_idle(self) -> None:
        if self._idle_waiters and (self.idle or (self._closing and not self._running)):
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.set()

    # -- scheduling -----------------------------------------------------------------

    def _make_ready(self, key: K) -> None:
        self._ready.append(key)
        if self._sleepers:
            self._sleepers.pop().set()

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the runners, the retry timer and the idle sweeper until cancelled."""
        async with anyio.create_task_group() as tg:
            for _ in range(self._concurrency):
                tg.start_soon(self._runner)
            tg.start_soon(self._timer)
            if self._idle_timeout and math.isfinite(self._idle_timeout):
                tg.start_soon(self._sweeper)
            task_status.started()

    async def _runner(self) -> None:
        ready = self._ready
        while True:
            if not ready or self._closing:
                wakeup = anyio.Event()
                self._sleepers.append(wakeup)
                await wakeup.wait()
                continue
            key = ready.popleft()
            await self._run_key(key)

    async def _run_key(self, key: K) -> None:
        box = self._mailboxes[key]
        items = box.items
        handle = self._handle
        self._running += 1
        try:
            for _ in range(self._batch):
                if not items or self._closing:
                    break
                item = items.popleft()
                self._queued -= 1
                try:
                    delay = await handle(key, item)
                except StoreUnavailable as exc:  # kept: the store is away, not the item wrong
                    delay = max(self._outage.failed(exc), 0.01)
                except Exception:
                    log.exception("dispatch handler failed for %s", key)
                    delay = None
                else:
                    if self._outage.down:
                        self._outage.succeeded()
                if delay is not None:
                    items.appendleft(item)
                    self._queued += 1
                    self._park(key, box, delay)
                    return
                self._handled += 1
        finally:
            self._running -= 1
            box.last_active = anyio.current_time()
        if items and not self._closing:
            self._make_ready(key)
        else:
            box.scheduled = False
        self._notify_idle()
        # yield so that a runner with a long backlog does not starve the loop
        await anyio.lowlevel.checkpoint()

    def _park(self, key: K, box: _Mailbox[T], delay: float) -> None:
        box.parked = True
        self._parked_seq += 1
        heapq.heappush(self._parked, (anyio.current_time() + delay, self._parked_seq, key))
        self._timer_wakeup.set()

    async def _timer(self) -> None:
        while True:
            now = anyio.current_time()
            while self._parked and self._parked[0][0] <= now:
                _, _, key = heapq.heappop(self._parked)
                box = self._mailboxes.get(key)
                if box is None:
                    continue
                box.parked = False
                if box.items:
                    self._make_ready(key)
                else:
                    box.scheduled = False
            self._timer_wakeup = anyio.Event()
            timeout = self._parked[0][0] - now if self._parked else math.inf
            with anyio.move_on_after(timeout):
                await self._timer_wakeup.wait()

    async def _sweeper(self) -> None:
        period = max(self._idle_timeout / 2, 0.01)
        while True:
            await anyio.sleep(period)
            horizon = anyio.current_time() - self._idle_timeout
            stale = [
                key
                for key, box in self._mailboxes.items()
                if not box.scheduled and not box.items and box.last_active <= horizon
            ]
            for key in stale:
                await self._retire(key)

    async def _retire(self, key: K) -> None:
        box = self._mailboxes.get(key)
        if box is None or box.scheduled or box.items:
            return
        box.scheduled = True  # no runner may take the key while it deactivates
        try:
            if self._deactivate is not None:
                try:
                    await self._deactivate(key)
                except Exception:
                    log.exception("deactivation failed for %s", key)
        finally:
            if box.items:
                self._make_ready(key)  # work arrived meanwhile: keep the key
            else:
                del self._mailboxes[key]
