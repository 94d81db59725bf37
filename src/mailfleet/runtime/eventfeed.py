"""The event feed: one poller per process that knows how far the event log is settled.

Events are written by every process on the store (API instances, workers,
the MX), so whoever follows the log must read the store; a doorbell in this
process would miss the others. :class:`EventFeed` polls it for every reader
of the process at once: each round reads the ids that became visible after
its :class:`~mailfleet.model.frontier.Frontier` (one indexed query, ids and
application ids only, whatever the number of streams), advances the
frontier over them, and wakes the readers of the applications that got new
events. Readers then read their own application's events, up to the
frontier, through their scope.

Reading only up to the frontier is what makes a cursor safe on PostgreSQL,
where an event id can become visible after a higher one: a missing id holds
the frontier until it appears or ``settle`` seconds have passed (then it is
taken for a rollback). On SQLite ids are never missing and nothing waits.

The feed polls every ``interval`` seconds while someone waits on it
(:meth:`EventFeed.wait`), and not at all otherwise; :meth:`EventFeed.settled`
refreshes on demand (``GET /v1/events`` calls it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
from anyio.abc import TaskStatus

from ..model.frontier import Frontier
from ..store import events
from ..store.database import Database
from ..store.outage import Outage

__all__ = ["EventFeed"]

log = logging.getLogger("mailfleet.events")

_BATCH = 10_000
"""Ids read per round at most."""

_LOOKBACK = 10_000
"""How many ids below the newest a new feed re-examines: a transaction still open when
the feed starts may hold one of them."""


class EventFeed:
    """The settled position of the store's event log, shared by every reader in a process.

    Run :meth:`run` in a task group for the feed's lifetime; then
    :meth:`settled` gives the position up to which the log may be read, and
    :meth:`wait` waits for an application's next events.
    """

    def __init__(
        self,
        database: Database,
        *,
        interval: float = 0.25,
        settle: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._database = database
        self.interval = interval
        self._settle = settle
        self._clock = clock
        self._frontier: Frontier | None = None
        self._latest: dict[str, int] = {}  # application id -> its newest settled event id
        self._changed = anyio.Event()
        self._listeners = 0
        self._wanted = anyio.Event()
        self._refreshing = anyio.Lock()
        self._begun = 0  # refreshes begun so far

    @property
    def position(self) -> int:
        """The settled position as last refreshed (0 before the first refresh)."""
        return 0 if self._frontier is None else self._frontier.position

    async def settled(self) -> int:
        """Refresh the frontier and return it: every event at or below it that will ever
        be visible is visible, and so is every event committed before the call.

        Concurrent callers share one refresh: one that began after the call is as
        good as its own.
        """
        ticket = self._begun
        async with self._refreshing:
            if self._begun > ticket:
                return self.position
            self._begun += 1
            frontier = self._frontier
            if frontier is None:
                newest = await self._database.read(events.latest_position)
                frontier = self._frontier = Frontier(
                    max(newest - _LOOKBACK, 0), settle=self._settle
                )
            before = frontier.position
            found = await self._database.read(
                lambda conn: events.positions(conn, after=before, limit=_BATCH)
            )
            after = frontier.advance([i for i, _ in found], self._clock())
            if after > before:
                latest = self._latest
                for i, application_id in found:
                    if i > after:
                        break
                    latest[application_id] = i  # ascending: the last one wins
                self._changed.set()
                self._changed = anyio.Event()
            return after

    async def wait(self, application_id: str, after: int) -> int:
        """Wait until the application ``application_id`` has an event above ``after`` and
        at or below the frontier; return the frontier then (use a cancel scope to give up).

        ``after`` must be at least the position :meth:`settled` returned when the
        caller last read: the feed knows of new events from there on.
        """
        with self._listening():
            while True:
                position = self.position
                if position > after and self._latest.get(application_id, 0) > after:
                    return position
                await self._changed.wait()

    @contextmanager
    def _listening(self) -> Iterator[None]:
        self._listeners += 1
        self._wanted.set()
        try:
            yield
        finally:
            self._listeners -= 1
            if not self._listeners:
                self._wanted = anyio.Event()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll while someone waits, every ``interval`` seconds, until cancelled."""
        task_status.started()
        outage = Outage("following the event log", log)
        while True:
            await self._wanted.wait()
            try:
                await self.settled()
            except Exception as exc:  # the store is away (or a bug): backed off
                await outage.pause(exc)
            else:
                outage.succeeded()
            await anyio.sleep(self.interval)
