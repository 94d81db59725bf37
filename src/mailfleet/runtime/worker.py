"""The durable worker: claims grants, runs their queued messages in order, records completions.

One worker per process. It holds the lease of every grant it is running and
renews them; it loads each claimed grant's ready entries in id order into the
in-memory :class:`~mailfleet.runtime.dispatcher.Dispatcher`, whose handler
calls the agent through the :class:`~mailfleet.runtime.host.AgentHost`.
Completions are committed in batches (entry deleted and agent state saved in
one transaction); a grant whose loaded work is all committed is refilled from
the database in that same transaction, or its lease is released.

Delivery to handlers is at-least-once: a worker that dies after a handler
returned but before the completion committed leaves the entry ready, and the
next holder of the grant runs it again, with the same message id.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus
from sqlalchemy.engine import Connection

from ..mail.inbound import InboundMessage
from ..model.records import Grant
from ..store import grants as grant_store
from ..store import queue
from ..store.database import Database
from ..store.queue import QueuedMessage
from .dispatcher import Dispatcher
from .host import AgentHost, HandlerFailure

__all__ = ["Worker", "WorkerSettings", "new_worker_id"]

log = logging.getLogger("mailfleet.worker")


def new_worker_id() -> str:
    """A worker id unique across machines and restarts: host, pid and a random tag."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker claims, runs and retries."""

    concurrency: int = 64
    queue_limit: int = 1000
    handler_timeout: float | None = 30.0
    max_attempts: int = 5
    retry_base: float = 1.0
    retry_max: float = 300.0
    idle_timeout: float = 60.0
    lease_ttl: float = 30.0
    poll_interval: float = 1.0
    max_grants: int = 10_000
    per_grant: int = 200
    flush_interval: float = 0.005
    flush_batch: int = 2000

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1``: exponential, capped."""
        return float(min(self.retry_base * 2.0 ** (attempt - 1), self.retry_max))


class Worker:
    """Runs the durable queues of the grants it can claim."""

    def __init__(
        self,
        database: Database,
        application_id: str,
        host: AgentHost,
        settings: WorkerSettings,
        *,
        worker_id: str | None = None,
    ) -> None:
        self.id = worker_id or new_worker_id()
        self._db = database
        self._app_id = application_id
        self._host = host
        self._settings = settings
        self.dispatcher: Dispatcher[str, QueuedMessage] = Dispatcher(
            self._handle,
            concurrency=settings.concurrency,
            queue_limit=max(settings.queue_limit, settings.per_grant),
            idle_timeout=settings.idle_timeout,
            deactivate=self._deactivate,
        )
        self._grants: dict[str, Grant] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._held: dict[str, int] = {}  # grant id -> claim generation
        self._idle_since: dict[str, float] = {}  # held grants with nothing in flight
        self._generation = 0
        self._inflight: dict[str, int] = {}
        self._attempts: dict[int, int] = {}
        self._done: list[int] = []
        self._dirty: dict[str, dict[str, Any]] = {}
        self._defects: dict[str, list[str]] = {}  # message id -> MIME defects found
        self._drained: set[str] = set()
        self._claim_wakeup = anyio.Event()
        self._want_claim = True
        self._flush_wakeup = anyio.Event()
        self._leases = anyio.Lock()  # releases (in flushes) and renewals never overlap
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    def notify(self, grant_ids: Collection[str] | None = None) -> None:
        """New work was committed (for these grants): look for it now.

        Grants this worker is running already get their new work when their
        loaded batch is done; only others (or held grants gone idle) need a look.
        """
        if grant_ids is None or any(g not in self._held for g in grant_ids):
            self._want_claim = True
            self._claim_wakeup.set()
        elif any(g in self._idle_since for g in grant_ids):
            self._claim_wakeup.set()  # a refill of held grants is enough

    @property
    def held(self) -> frozenset[str]:
        """The grants whose leases this worker holds."""
        return frozenset(self._held)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Claim and run work until cancelled."""
        async with anyio.create_task_group() as tg:
            await tg.start(self.dispatcher.serve)
            tg.start_soon(self._host.watch)
            tg.start_soon(self._claimer)
            tg.start_soon(self._flusher)
            tg.start_soon(self._heartbeat)
            task_status.started()

    async def drain(self, grace: float) -> None:
        """Stop claiming, let running handlers finish (up to ``grace`` seconds),
        commit what finished and give the leases back."""
        self._closing = True
        self.dispatcher.close()
        with anyio.move_on_after(grace):
            await self.dispatcher.wait_stopped()
        await self._flush()
        for grant_id in list(self._host_grants()):
            state = await self._host.deactivate(grant_id)
            if state is not None:
                self._dirty[grant_id] = state
        await self._flush()
        if self._held:
            held = sorted(self._held)
            await self._db.write(lambda c: queue.release(c, self.id, held))
            self._held.clear()

    def _host_grants(self) -> list[str]:
        return [g for g in self._grants if self._host.get(g) is not None]

    # -- claiming --------------------------------------------------------------------

    async def _claimer(self) -> None:
        while not self._closing:
            room = self._settings.max_grants - len(self._held)
            want_claim, self._want_claim = self._want_claim, False
            claimed = await self._claim(room if want_claim else 0)
            if claimed and claimed >= min(room, 500):
                self._want_claim = True  # there may be more
                await anyio.lowlevel.checkpoint()
                continue
            with anyio.move_on_after(self._settings.poll_interval) as waited:
                await self._claim_wakeup.wait()
            if waited.cancelled_caught:
                self._want_claim = True  # the poll: work from other processes
            self._claim_wakeup = anyio.Event()

    async def _claim(self, room: int) -> int:
        """One transaction: refill held grants that went idle, release those idle for
        longer than the linger time, and claim new grants with work."""
        settings = self._settings
        linger = min(2.0, settings.lease_ttl / 3)
        async with self._leases:
            # Only grants whose completions are all committed: their ready entries
            # in the store are exactly the ones not run yet.
            idle = [g for g in self._held if g in self._idle_since]
            if not idle and room <= 0:
                return 0
            now = time.monotonic()

            def work(conn: Connection) -> tuple[list[str], list[str], list[QueuedMessage]]:
                refilled = queue.load(conn, idle, per_grant=settings.per_grant) if idle else []
                busy = {entry.grant_id for entry in refilled}
                expired = [
                    g
                    for g in idle
                    if g not in busy and now - self._idle_since.get(g, now) >= linger
                ]
                queue.release(conn, self.id, expired)
                claimed = (
                    queue.claim(
                        conn, self.id, now=time.time(), ttl=settings.lease_ttl, limit=min(room, 500)
                    )
                    if room > 0
                    else []
                )
                fresh = queue.load(conn, claimed, per_grant=settings.per_grant) if claimed else []
                wanted = sorted(busy | {entry.grant_id for entry in fresh})
                if wanted:
                    self._load_grants(conn, wanted)
                return claimed, expired, refilled + fresh

            claimed, expired, entries = await self._db.write(work)
            for grant_id in expired:
                self._held.pop(grant_id, None)
                self._idle_since.pop(grant_id, None)
            self._generation += 1
            self._held.update(dict.fromkeys(claimed, self._generation))
            self._accept(entries)
            for grant_id in claimed:
                if not self._inflight.get(grant_id):
                    self._idle_since.setdefault(grant_id, now)
        return len(claimed)

    def _load_grants(self, conn: Connection, grant_ids: list[str]) -> None:
        self._grants.update(grant_store.grants_by_ids(conn, self._app_id, grant_ids))
        fresh = [g for g in grant_ids if self._host.get(g) is None]
        self._states.update(queue.states(conn, fresh))

    def _accept(self, entries: list[QueuedMessage]) -> None:
        for entry in entries:
            self._inflight[entry.grant_id] = self._inflight.get(entry.grant_id, 0) + 1
            self._drained.discard(entry.grant_id)
            self._idle_since.pop(entry.grant_id, None)
            self.dispatcher.put_nowait(entry.grant_id, entry)

    # -- running ---------------------------------------------------------------------

    async def _handle(self, grant_id: str, entry: QueuedMessage) -> float | None:
        if entry.not_before is not None:
            wait = entry.not_before - time.time()
            if wait > 0:
                return wait
        agent = self._host.get(grant_id)
        grant = self._grants.get(grant_id)
        if agent is None and grant is not None:
            agent = await self._host.activate(grant, self._states.pop(grant_id, None))
        if agent is None or "on_message" not in agent.handlers:
            self._finished(grant_id, entry)  # no handler: the message stays in the inbox
            return None
        attempt = self._attempts.get(entry.entry_id, entry.attempts) + 1
        message = InboundMessage.from_stored(entry.message, attempt=attempt)
        try:
            await self._host.call(agent, "on_message", message, message_id=message.id)
        except HandlerFailure as failure:
            return await self._failed(grant_id, entry, attempt, str(failure))
        finally:
            if message.was_parsed and message.defects:
                self._defects[message.id] = list(message.defects)
        state = self._host.changed_state(grant_id, agent)
        if state is not None:
            self._dirty[grant_id] = state
        self._finished(grant_id, entry)
        return None

    async def _failed(
        self, grant_id: str, entry: QueuedMessage, attempt: int, error: str
    ) -> float | None:
        if attempt >= self._settings.max_attempts:
            await self._db.write(
                lambda c: queue.to_dead_letter(
                    c, self._app_id, _with_attempts(entry, attempt - 1), error=error
                )
            )
            self._attempts.pop(entry.entry_id, None)
            self._release_inflight(grant_id)
            return None
        delay = self._settings.backoff(attempt)
        await self._db.write(
            lambda c: queue.retry_later(
                c,
                self._app_id,
                _with_attempts(entry, attempt - 1),
                not_before=time.time() + delay,
                error=error,
            )
        )
        self._attempts[entry.entry_id] = attempt
        return delay

    def _finished(self, grant_id: str, entry: QueuedMessage) -> None:
        self._attempts.pop(entry.entry_id, None)
        self._done.append(entry.entry_id)
        self._release_inflight(grant_id)
        if len(self._done) >= self._settings.flush_batch:
            self._flush_wakeup.set()

    def _release_inflight(self, grant_id: str) -> None:
        left = self._inflight.get(grant_id, 1) - 1
        if left <= 0:
            self._inflight.pop(grant_id, None)
            self._drained.add(grant_id)
            self._flush_wakeup.set()
        else:
            self._inflight[grant_id] = left

    async def _deactivate(self, grant_id: str) -> None:
        state = await self._host.deactivate(grant_id)
        if state is not None:
            self._dirty[grant_id] = state
            self._flush_wakeup.set()
        if grant_id not in self._held:
            self._grants.pop(grant_id, None)

    # -- committing ------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._flush_wakeup.wait()
            self._flush_wakeup = anyio.Event()
            await anyio.sleep(self._settings.flush_interval)  # let a batch gather
            await self._flush()

    async def _flush(self) -> None:
        if not (self._done or self._dirty or self._drained or self._defects):
            return
        done, self._done = self._done, []
        dirty, self._dirty = self._dirty, {}
        defects, self._defects = self._defects, {}
        drained = sorted(g for g in self._drained if g in self._held)
        self._drained.clear()
        refill = not self._closing

        def work(conn: Connection) -> list[QueuedMessage]:
            queue.complete(conn, done, dirty, defects)
            if not (drained and refill):
                return []
            loaded = queue.load(conn, drained, per_grant=self._settings.per_grant)
            if loaded:
                self._load_grants(conn, sorted({entry.grant_id for entry in loaded}))
            return loaded

        try:
            # Shielded: what was taken from the pending lists must be committed.
            with anyio.CancelScope(shield=True):
                async with self._leases:
                    loaded = await self._db.write(work)
                    self._accept(loaded)
                    now = time.monotonic()
                    for grant_id in drained:
                        if not self._inflight.get(grant_id):
                            # Kept for a while: more mail is likely; the claimer lets it go.
                            self._idle_since.setdefault(grant_id, now)
        except Exception:
            # Nothing was committed: keep the work to try again with the next flush.
            self._done = done + self._done
            self._dirty = {**dirty, **self._dirty}
            self._defects = {**defects, **self._defects}
            self._drained.update(drained)
            log.exception("committing completions failed; will retry")
            await anyio.sleep(0.5)
            self._flush_wakeup.set()
            return

    # -- leases ----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        period = self._settings.lease_ttl / 3
        while True:
            await anyio.sleep(period)
            if not self._held:
                continue
            held = dict(self._held)
            expires = time.time() + self._settings.lease_ttl
            try:
                async with self._leases:
                    kept = await self._db.write(
                        partial(
                            queue.renew, worker=self.id, grant_ids=sorted(held), expires_at=expires
                        )
                    )
            except Exception:
                log.exception("renewing leases failed")
                continue
            for grant_id, generation in held.items():
                if grant_id in kept or self._held.get(grant_id) != generation:
                    continue  # renewed, or released (and maybe claimed again) meanwhile
                log.warning("lost the lease of grant %s; dropping its local work", grant_id)
                self._held.pop(grant_id, None)
                self.dispatcher.discard(grant_id)
                self._inflight.pop(grant_id, None)
                self._host.forget(grant_id)
                self._idle_since.pop(grant_id, None)


def _with_attempts(entry: QueuedMessage, attempts: int) -> QueuedMessage:
    return replace(entry, attempts=attempts)
