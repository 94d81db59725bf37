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

A grant's handlers run only while the worker can *prove* its lease: a claim or
renewal sent at ``t`` proves it until ``t + lease_ttl - lease_margin``
(:attr:`WorkerSettings.lease_margin`), before any other worker may claim it. A grant
whose proof runs out (renewals failing: the database is away; or late: the worker is
starved) is *suspended*: its running handler is interrupted (its message runs again
later) and no other starts, until a renewal proves the lease again (the grant goes
on) or shows it taken over (the grant is dropped with its uncommitted work, which
its new holder runs again). Completions are fenced: a flush commits those of the
grants whose lease row still names this worker, and drops the others.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ..mail.inbound import InboundMessage
from ..model.deliverability import Bounce, Complaint, Unsubscribe
from ..model.errors import StoreUnavailable
from ..model.records import Grant
from ..store import grants as grant_store
from ..store import queue, workers
from ..store.outage import Outage
from ..store.queue import QueuedMessage
from ..store.scope import Scope, Tx
from .dispatcher import Dispatcher
from .host import AgentHost, HandlerFailure, HandlerInterrupted
from .metrics import RuntimeMetrics

__all__ = ["Worker", "WorkerSettings", "new_worker_id"]

log = logging.getLogger("mailfleet.worker")

CONTENDED_RETRY = 0.05
"""Seconds before a worker looks again for work after its claim skipped grants that
other workers were claiming at the same moment (at most ``poll_interval``)."""


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

    @property
    def lease_margin(self) -> float:
        """How long before its lease expires in the store a worker stops running a grant
        it could not renew: a fifth of ``lease_ttl``. It covers the worker's reaction time
        (its lease guard looks every ``lease_margin / 2``, at most every 0.5 s) and clock
        differences between machines, which must stay below it."""
        return self.lease_ttl / 5


@dataclass(slots=True, eq=False)
class _GrantRun:
    """Everything the worker knows of one grant it holds, or still has an agent for.

    The invariants live here: a grant is *held* while ``generation`` is set (this
    worker has its lease); ``inflight`` counts its entries handed to the dispatcher
    and not finished; ``idle_since`` is set while it is held with nothing in
    flight; ``drained`` and ``dirty`` say what the next flush must do for it.
    """

    generation: int | None = None
    """The claim generation while this worker holds the lease; None once let go."""
    deadline: float = 0.0
    """Monotonic time until which the last claim or renewal proves the lease (sent at
    ``t``: ``t + lease_ttl - lease_margin``); past it the grant is suspended."""
    suspended: bool = False
    """Its proof ran out and its running handler was interrupted (logged once)."""
    grant: Grant | None = None
    """The grant record, read with its work."""
    saved_state: dict[str, Any] | None = None
    """The agent state read from the store, for the next activation."""
    inflight: int = 0
    idle_since: float | None = None
    """Monotonic time since which it is held with nothing in flight."""
    drained: bool = False
    """Everything in flight finished: the next flush refills it (or it idles)."""
    dirty: dict[str, Any] | None = None
    """An agent state to commit with the next flush."""
    attempts: dict[int, int] = field(default_factory=dict)
    """Attempts made here, per queue entry id, beyond those recorded in the store."""

    @property
    def held(self) -> bool:
        return self.generation is not None


class Worker:
    """Runs the durable queues of the grants it can claim: its scope's application and
    agent classes only."""

    def __init__(
        self,
        scope: Scope,
        host: AgentHost,
        settings: WorkerSettings,
        *,
        worker_id: str | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.id = worker_id or new_worker_id()
        self.metrics = metrics if metrics is not None else RuntimeMetrics()
        """What this worker observes: dispatch latency, handler durations."""
        self._scope = scope
        self._host = host
        self._settings = settings
        self.dispatcher: Dispatcher[str, QueuedMessage] = Dispatcher(
            self._handle,
            concurrency=settings.concurrency,
            queue_limit=max(settings.queue_limit, settings.per_grant),
            idle_timeout=settings.idle_timeout,
            deactivate=self._deactivate,
        )
        self._runs: dict[str, _GrantRun] = {}
        self._pending: set[str] = set()  # grants whose run has something to flush
        self._generation = 0
        self._done: dict[str, list[int]] = {}  # grant id -> handled entries to commit
        self._done_count = 0
        self._defects: dict[str, list[str]] = {}  # message id -> MIME defects found
        self._claim_wakeup = anyio.Event()
        self._want_claim = True
        self._flush_wakeup = anyio.Event()
        self._leases = anyio.Lock()  # releases (in flushes) and renewals never overlap
        self._closing = False
        # Each loop lives through a store outage on its own: it keeps its work, backs
        # off and logs the outage once (store/outage.py).
        self._claiming = Outage("claiming grants", log)
        self._committing = Outage("committing completions", log)
        self._renewing = Outage("renewing leases", log)
        self._handling = Outage("recording handler results", log)

    # -- lifecycle -------------------------------------------------------------------

    def notify(self, grant_ids: Collection[str] | None = None) -> None:
        """New work was committed (for these grants): look for it now.

        Grants this worker is running already get their new work when their
        loaded batch is done; only others (or held grants gone idle) need a look.
        """
        runs = self._runs
        if grant_ids is None or any(
            (run := runs.get(g)) is None or not run.held for g in grant_ids
        ):
            self._want_claim = True
            self._claim_wakeup.set()
        elif any(runs[g].idle_since is not None for g in grant_ids):
            self._claim_wakeup.set()  # a refill of held grants is enough

    @property
    def active_agents(self) -> int:
        """How many agent instances this worker has activated now."""
        return self._host.active

    @property
    def held(self) -> frozenset[str]:
        """The grants whose leases this worker holds."""
        return frozenset(g for g, run in self._runs.items() if run.held)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Announce this worker, then claim and run work until cancelled; the
        announcement is withdrawn when it ends."""
        if not self._scope.agents:
            log.warning(
                "worker %s serves no agent class: it claims nothing (bind an Agent, or "
                "give the fleet a default_agent)",
                self.id,
            )
        try:
            await self._scope.write(self._announce)
            async with anyio.create_task_group() as tg:
                await tg.start(self.dispatcher.serve)
                tg.start_soon(self._host.watch)
                tg.start_soon(self._claimer)
                tg.start_soon(self._flusher)
                tg.start_soon(self._heartbeat)
                tg.start_soon(self._lease_guard)
                task_status.started()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._scope.write(lambda tx: workers.withdraw(tx, self.id))
                except Exception:  # the announcement expires by itself; keep the first error
                    log.warning("worker %s could not withdraw its announcement", self.id)

    def _announce(self, tx: Tx) -> None:
        workers.announce(tx, self.id, expires_at=time.time() + self._settings.lease_ttl)

    async def drain(self, grace: float) -> None:
        """Stop claiming, let running handlers finish (up to ``grace`` seconds),
        commit what finished and give the leases back. With the store unavailable,
        what finished is not recorded (it runs again: at-least-once) and the
        leases expire by themselves."""
        self._closing = True
        self.dispatcher.close()
        with anyio.move_on_after(grace):
            await self.dispatcher.wait_stopped()
        await self._flush()
        for grant_id in list(self._runs):
            self._keep_state(grant_id, await self._host.deactivate(grant_id))
        await self._flush()
        held = sorted(g for g, run in self._runs.items() if run.held)
        try:
            await self._scope.write(lambda tx: queue.release(tx, self.id, held))
        except StoreUnavailable as exc:  # they expire by themselves, after lease_ttl
            log.warning(
                "worker %s could not give back the leases of %d grants: %s",
                self.id,
                len(held),
                exc,
            )
        self._runs.clear()

    # -- claiming --------------------------------------------------------------------

    async def _claimer(self) -> None:
        while not self._closing:
            want_claim, self._want_claim = self._want_claim, False
            try:
                claimed, room, contended = await self._claim(want_claim)
            except Exception as exc:  # the store is away (or a bug): nothing was claimed
                self._want_claim = self._want_claim or want_claim
                await self._claiming.pause(exc)
                continue
            self._claiming.succeeded()
            if claimed and claimed >= min(room, 500):
                self._want_claim = True  # there may be more
                await anyio.lowlevel.checkpoint()
                continue
            if contended:
                # Other workers were claiming the same grants at that moment: once their
                # claims commit, the next look finds what they left (sooner than a poll).
                self._want_claim = True
                await anyio.sleep(min(self._settings.poll_interval, CONTENDED_RETRY))
                continue
            with anyio.move_on_after(self._settings.poll_interval) as waited:
                await self._claim_wakeup.wait()
            if waited.cancelled_caught:
                self._want_claim = True  # the poll: work from other processes
            self._claim_wakeup = anyio.Event()

    async def _claim(self, want_claim: bool) -> tuple[int, int, bool]:
        """One transaction: refill held grants that went idle, release those idle for
        longer than the linger time, and (if ``want_claim``) claim new grants with work.
        Returns how many it claimed, the room it had for more, and whether it skipped
        grants other workers were claiming at the same moment."""
        settings = self._settings
        linger = min(2.0, settings.lease_ttl / 3)
        async with self._leases:
            held = {g: run for g, run in self._runs.items() if run.held}
            room = settings.max_grants - len(held)
            # Only grants whose completions are all committed: their ready entries
            # in the store are exactly the ones not run yet.
            idle = {g: run.idle_since for g, run in held.items() if run.idle_since is not None}
            limit = min(room, 500) if want_claim else 0
            if not idle and limit <= 0:
                return 0, room, False
            now = time.monotonic()  # before the claim's time.time(): it proves no more

            def work(
                tx: Tx,
            ) -> tuple[list[str], list[str], list[str], list[QueuedMessage], bool]:
                refilled = queue.load(tx, list(idle), per_grant=settings.per_grant) if idle else []
                busy = {entry.grant_id for entry in refilled}
                expired = [
                    g for g, since in idle.items() if g not in busy and now - since >= linger
                ]
                queue.release(tx, self.id, expired)
                # A grant still held here whose lease lapsed (a heartbeat late) and still
                # names this worker is renewed, not claimed anew: its entries are loaded
                # already (loading them again would run them twice). One whose lease names
                # another worker is not taken: the heartbeat finds it lost.
                taken = (
                    queue.claim(
                        tx,
                        self.id,
                        now=time.time(),
                        ttl=settings.lease_ttl,
                        limit=limit,
                        held=held.keys() - set(expired),
                    )
                    if limit > 0
                    else queue.Claim([], [])
                )
                claimed = taken.grants
                fresh = queue.load(tx, claimed, per_grant=settings.per_grant) if claimed else []
                wanted = sorted(busy | {entry.grant_id for entry in fresh})
                if wanted:
                    self._load_grants(tx, wanted)
                return claimed, expired, taken.renewed, refilled + fresh, taken.contended

            claimed, expired, renewed, entries, contended = await self._scope.write(work)
            if renewed:
                log.warning(
                    "worker %s: the leases of %d grants lapsed before renewal "
                    "(heartbeat late by more than lease_ttl/3); renewed",
                    self.id,
                    len(renewed),
                )
            for grant_id in expired:
                self._let_go(grant_id)
            self._generation += 1
            deadline = now + settings.lease_ttl - settings.lease_margin
            self._proven(renewed, deadline)
            for grant_id in claimed:
                run = self._run(grant_id)
                run.generation, run.deadline = self._generation, deadline
            self._accept(entries)
            for grant_id in claimed:
                run = self._runs[grant_id]
                if not run.inflight and run.idle_since is None:
                    run.idle_since = now
        return len(claimed), room, contended

    def _run(self, grant_id: str) -> _GrantRun:
        run = self._runs.get(grant_id)
        if run is None:
            run = self._runs[grant_id] = _GrantRun()
        return run

    def _load_grants(self, tx: Tx, grant_ids: list[str]) -> None:
        found = grant_store.grants_by_ids(tx, grant_ids)
        fresh = [g for g in grant_ids if self._host.get(g) is None]
        saved = queue.states(tx, fresh)
        for grant_id in grant_ids:
            run = self._run(grant_id)
            run.grant = found.get(grant_id)
            if grant_id in saved:
                run.saved_state = saved[grant_id]

    def _accept(self, entries: list[QueuedMessage]) -> None:
        for entry in entries:
            run = self._run(entry.grant_id)
            run.inflight += 1
            run.drained = False
            run.idle_since = None
            self.dispatcher.put_nowait(entry.grant_id, entry)

    def _let_go(self, grant_id: str) -> None:
        """The lease is given back: keep the record only while its agent is active."""
        run = self._runs.get(grant_id)
        if run is None:
            return
        run.generation = None
        run.idle_since = None
        self._forget_if_done(grant_id)

    def _forget_if_done(self, grant_id: str) -> None:
        run = self._runs.get(grant_id)
        if (
            run is not None
            and not run.held
            and not run.inflight
            and run.dirty is None
            and self._host.get(grant_id) is None
        ):
            del self._runs[grant_id]

    # -- running ---------------------------------------------------------------------

    async def _handle(self, grant_id: str, entry: QueuedMessage) -> float | None:
        if entry.not_before is not None:
            wait = entry.not_before - time.time()
            if wait > 0:
                return wait
        run = self._runs.get(grant_id)
        if run is None or not run.held:  # dropped meanwhile: its entries are not ours
            return None
        if time.monotonic() >= run.deadline:
            return self._suspended_retry  # wait for a renewal (or the grant's loss)
        attempt = run.attempts.get(entry.entry_id, entry.attempts) + 1
        agent = self._host.get(grant_id)
        try:
            if agent is None:
                if run.grant is not None:
                    state, run.saved_state = run.saved_state, None
                    try:
                        agent = await self._host.activate(run.grant, state)
                    except HandlerFailure as failure:  # on_start failed: it runs again next time
                        run.saved_state = state
                        return await self._failed(run, grant_id, entry, attempt, failure)
                if agent is None:  # not a grant this worker serves (or no longer a grant)
                    await self._give_back(grant_id, run)
                    return None
            handler = _HANDLER_OF.get(entry.kind, "on_message")
            if handler not in agent.handlers:
                # The class has no such handler: a message stays in the grant's inbox,
                # a bounce, complaint or unsubscribe in its events.
                self._finished(run, grant_id, entry)
                return None
            message = InboundMessage.from_stored(entry.message, attempt=attempt)
            argument = message if handler in _GIVEN_THE_MESSAGE else _record(entry)
            metrics = self.metrics
            if attempt == 1 and entry.kind == "message":
                waited = time.time() - entry.message.received_at.timestamp()
                metrics.dispatch_latency.observe(max(waited, 0.0))
            started = time.perf_counter()
            try:
                await self._host.call(agent, handler, argument, message_id=message.id)
                state = self._host.changed_state(grant_id, agent)
            except HandlerFailure as failure:  # raised, timed out, or left a state JSON cannot hold
                return await self._failed(run, grant_id, entry, attempt, failure)
            finally:
                metrics.handler_duration.observe(time.perf_counter() - started)
                if message.was_parsed and message.defects:
                    self._defects[message.id] = list(message.defects)
        except HandlerInterrupted:
            # Suspended: the message runs again once the lease is proven; dropped: not here.
            return self._suspended_retry if self._runs.get(grant_id) is run else None
        if self._runs.get(grant_id) is not run:
            return None  # dropped while the handler ran
        self._handling.succeeded()
        self._keep_state(grant_id, state)
        self._finished(run, grant_id, entry)
        return None

    async def _give_back(self, grant_id: str, run: _GrantRun) -> None:
        """Leave the entries of a grant this worker does not serve untouched, for a
        process that serves it, and release its lease. Claims take only served grants;
        this is the guard for a grant changed (or deleted) after its claim."""
        log.warning(
            "worker %s does not serve grant %s (agent %s); leaving its queue untouched",
            self.id,
            grant_id,
            "(deleted grant)" if run.grant is None else run.grant.agent or "(none)",
        )
        self.dispatcher.discard(grant_id)
        run.inflight = 0
        run.attempts.clear()
        async with self._leases:
            try:
                await self._scope.write(lambda tx: queue.release(tx, self.id, [grant_id]))
            except StoreUnavailable:
                pass  # the lease expires by itself
        self._let_go(grant_id)

    async def _failed(
        self,
        run: _GrantRun,
        grant_id: str,
        entry: QueuedMessage,
        attempt: int,
        failure: HandlerFailure,
    ) -> float | None:
        if self._runs.get(grant_id) is not run:
            return None  # dropped while the handler ran
        error = str(failure)
        if isinstance(failure.__cause__, StoreUnavailable):
            # The store failed the handler (its send could not be queued): not an
            # attempt of the handler's; it runs again once the store is back.
            return self._store_away(failure.__cause__)
        delay = self._settings.backoff(attempt)
        try:
            if attempt >= self._settings.max_attempts:
                await self._scope.write(
                    lambda tx: queue.to_dead_letter(
                        tx, _with_attempts(entry, attempt - 1), error=error
                    )
                )
            else:
                await self._scope.write(
                    lambda tx: queue.retry_later(
                        tx,
                        _with_attempts(entry, attempt - 1),
                        not_before=time.time() + delay,
                        error=error,
                    )
                )
        except StoreUnavailable as exc:  # not recorded: the entry runs again after a wait
            run.attempts[entry.entry_id] = attempt
            return self._store_away(exc)
        self._handling.succeeded()
        if attempt >= self._settings.max_attempts:
            log.warning(
                "message %s of grant %s dead-lettered after %d attempts: %s",
                entry.message.id,
                grant_id,
                attempt,
                error,
                extra={"grant_id": grant_id, "message_id": entry.message.id, "attempts": attempt},
            )
            run.attempts.pop(entry.entry_id, None)
            self._release_inflight(grant_id, run)
            return None
        run.attempts[entry.entry_id] = attempt
        return delay

    def _store_away(self, exc: BaseException) -> float:
        """The wait before an entry runs again after the store failed its round."""
        return max(self._handling.failed(exc), 0.01)

    def _finished(self, run: _GrantRun, grant_id: str, entry: QueuedMessage) -> None:
        run.attempts.pop(entry.entry_id, None)
        self._done.setdefault(grant_id, []).append(entry.entry_id)
        self._done_count += 1
        self._release_inflight(grant_id, run)
        if self._done_count >= self._settings.flush_batch:
            self._flush_wakeup.set()

    def _release_inflight(self, grant_id: str, run: _GrantRun) -> None:
        run.inflight -= 1
        if run.inflight <= 0:
            run.inflight = 0
            run.drained = True
            self._pending.add(grant_id)
            self._flush_wakeup.set()

    def _keep_state(self, grant_id: str, state: dict[str, Any] | None) -> None:
        """Commit ``state`` with the next flush (None: nothing changed)."""
        if state is not None:
            self._run(grant_id).dirty = state
            self._pending.add(grant_id)

    async def _deactivate(self, grant_id: str) -> None:
        state = await self._host.deactivate(grant_id)
        if state is not None:
            self._keep_state(grant_id, state)
            self._flush_wakeup.set()
        else:
            self._forget_if_done(grant_id)

    # -- committing ------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._flush_wakeup.wait()
            self._flush_wakeup = anyio.Event()
            await anyio.sleep(self._settings.flush_interval)  # let a batch gather
            await self._flush()

    async def _flush(self) -> None:
        if not (self._done or self._pending or self._defects):
            return
        done, self._done, self._done_count = self._done, {}, 0
        defects, self._defects = self._defects, {}
        pending, self._pending = self._pending, set()
        runs = {g: self._runs[g] for g in pending if g in self._runs}
        dirty = {g: run.dirty for g, run in runs.items() if run.dirty is not None}
        drained = sorted(g for g, run in runs.items() if run.drained and run.held)
        for run in runs.values():
            run.dirty = None
            run.drained = False
        refill = not self._closing
        held = {g for g, run in runs.items() if run.held} | set(done)

        def work(tx: Tx) -> tuple[list[QueuedMessage], list[str]]:
            # The fence: what was done for a grant commits only while its lease row
            # names this worker (even expired: nobody claimed it since). The state an
            # agent left at its on_stop, after the lease was given back, is saved
            # unless another worker holds the grant now.
            touched = set(done) | set(dirty) | set(drained)
            leases = queue.lease_rows(tx, touched)
            mine = {g for g, (holder, _) in leases.items() if holder == self.id}
            wall = time.time()
            taken = {g for g, (who, until) in leases.items() if who != self.id and until > wall}
            entries = [entry for g, ids in done.items() if g in mine for entry in ids]
            states = {
                g: state
                for g, state in dirty.items()
                if g in mine or (g not in held and g not in taken)
            }
            queue.complete(tx, entries, states, defects)
            refused = sorted(g for g in touched if g in held and g not in mine)
            ready = [g for g in drained if g in mine]
            if not (ready and refill):
                return [], refused
            loaded = queue.load(tx, ready, per_grant=self._settings.per_grant)
            if loaded:
                self._load_grants(tx, sorted({entry.grant_id for entry in loaded}))
            return loaded, refused

        try:
            # Shielded: what was taken from the pending lists must be committed.
            with anyio.CancelScope(shield=True):
                async with self._leases:
                    loaded, refused = await self._scope.write(work)
                    self._lose(
                        refused,
                        "its lease was taken over; what it did since is not committed "
                        "(the new holder runs it again)",
                    )
                    self._accept([e for e in loaded if e.grant_id in self._runs])
                    now = time.monotonic()
                    for grant_id in drained:
                        kept = self._runs.get(grant_id)
                        if kept is not None and not kept.inflight and kept.idle_since is None:
                            # Kept for a while: more mail is likely; the claimer lets it go.
                            kept.idle_since = now
        except Exception as exc:
            # Nothing was committed: keep the work to try again with the next flush
            # (but not that of grants dropped meanwhile: their next holder runs it).
            for grant_id, ids in done.items():
                if grant_id in self._runs:
                    self._done[grant_id] = ids + self._done.get(grant_id, [])
                    self._done_count += len(ids)
            self._defects = {**defects, **self._defects}
            for grant_id, run in runs.items():
                if self._runs.get(grant_id) is not run:
                    continue
                if run.dirty is None and grant_id in dirty:
                    run.dirty = dirty[grant_id]
                if grant_id in drained and not run.inflight:
                    run.drained = True
                self._pending.add(grant_id)
            if self._closing:  # drain() goes on: the work not committed runs again elsewhere
                self._committing.failed(exc)
            else:
                await self._committing.pause(exc)
            self._flush_wakeup.set()
            return
        self._committing.succeeded()
        for grant_id in runs:
            self._forget_if_done(grant_id)

    # -- leases ----------------------------------------------------------------------

    def _release(self, grant_ids: list[str], tx: Tx) -> None:
        queue.release(tx, self.id, grant_ids)

    def _renew(self, held: list[str], expires: float, tx: Tx) -> set[str]:
        workers.announce(tx, self.id, expires_at=expires)
        return queue.renew(tx, self.id, held, expires_at=expires)

    async def _heartbeat(self) -> None:
        settings = self._settings
        while True:
            await anyio.sleep(settings.lease_ttl / 3)
            held = {g: run.generation for g, run in self._runs.items() if run.held}
            sent = time.monotonic()  # before the renewal's expiry: it proves no more
            expires = time.time() + settings.lease_ttl
            try:
                async with self._leases:
                    kept = await self._scope.write(partial(self._renew, sorted(held), expires))
                    # Renewed, but dropped here meanwhile (its proof ran out first): give
                    # the lease back at once rather than let it block the grant.
                    stale = [g for g in kept if g not in self._runs or not self._runs[g].held]
                    if stale:
                        await self._scope.write(partial(self._release, stale))
            except Exception as exc:  # tried again at the next beat
                self._renewing.failed(exc)
                continue
            self._renewing.succeeded()
            proven: list[str] = []
            lost: list[str] = []
            for grant_id, generation in held.items():
                run = self._runs.get(grant_id)
                if run is None or run.generation != generation:
                    continue  # released (and maybe claimed again) meanwhile
                # Kept: no other worker claimed it since this worker's claim (a claim
                # names its worker), so it was held without a gap, even if late.
                (proven if grant_id in kept else lost).append(grant_id)
            self._proven(proven, sent + settings.lease_ttl - settings.lease_margin)
            self._lose(lost, "the renewal found its lease held by another worker")

    @property
    def _suspended_retry(self) -> float:
        """How often a suspended grant's next message looks for a renewed proof; and
        how often the lease guard looks for proofs that ran out."""
        return min(max(self._settings.lease_margin / 2, 0.01), 0.5)

    async def _lease_guard(self) -> None:
        """Suspend the grants whose lease this worker can no longer prove: interrupt
        their running handlers (no other starts: see :meth:`_handle`)."""
        while True:
            await anyio.sleep(self._suspended_retry)
            now = time.monotonic()
            unproven = [
                g
                for g, run in self._runs.items()
                if run.held and not run.suspended and run.deadline <= now
            ]
            for grant_id in unproven:
                self._runs[grant_id].suspended = True
                self._host.interrupt(grant_id)
            if unproven:
                log.warning(
                    "worker %s suspends %d grant(s) (%s): their leases could not be renewed "
                    "in time (lease_ttl %gs less a margin of %gs); they go on once renewed",
                    self.id,
                    len(unproven),
                    _some(unproven),
                    self._settings.lease_ttl,
                    self._settings.lease_margin,
                    extra={"worker_id": self.id, "grants": len(unproven)},
                )

    def _proven(self, grant_ids: Collection[str], deadline: float) -> None:
        """A claim or renewal proves these grants' leases until ``deadline``."""
        resumed = []
        for grant_id in grant_ids:
            run = self._runs.get(grant_id)
            if run is None or not run.held:
                continue
            run.deadline = max(run.deadline, deadline)
            if run.suspended:
                run.suspended = False
                resumed.append(grant_id)
        if resumed:
            log.warning(
                "worker %s resumes %d grant(s) (%s): their leases are renewed",
                self.id,
                len(resumed),
                _some(resumed),
                extra={"worker_id": self.id, "grants": len(resumed)},
            )

    def _lose(self, grant_ids: Collection[str], reason: str) -> None:
        """Stop running these grants at once, as if this worker had died: interrupt the
        running handler, drop the queued entries, the uncommitted completions and the
        agent (no ``on_stop``); whoever holds the grant next runs that work again."""
        lost = [g for g in grant_ids if g in self._runs]
        if not lost:
            return
        log.warning(
            "worker %s stops running %d grant(s) (%s): %s",
            self.id,
            len(lost),
            _some(lost),
            reason,
            extra={"worker_id": self.id, "grants": len(lost)},
        )
        for grant_id in lost:
            del self._runs[grant_id]
            self.dispatcher.discard(grant_id)
            self._host.interrupt(grant_id)
            self._host.forget(grant_id)
            self._done_count -= len(self._done.pop(grant_id, ()))
            self._pending.discard(grant_id)


def _some(grant_ids: list[str]) -> str:
    """Up to five grant ids, for a log line."""
    more = len(grant_ids) - 5
    return ", ".join(grant_ids[:5]) + (f" and {more} more" if more > 0 else "")


_HANDLER_OF = {
    "message": "on_message",
    "spam": "on_spam",
    "bounce": "on_bounce",
    "complaint": "on_complaint",
    "unsubscribe": "on_unsubscribe",
}
_GIVEN_THE_MESSAGE = frozenset({"on_message", "on_spam"})


def _record(entry: QueuedMessage) -> Bounce | Complaint | Unsubscribe:
    """The typed record a bounce, complaint or unsubscribe entry carries for its handler."""
    payload = entry.payload or {}
    if entry.kind == "bounce":
        return Bounce.from_payload(payload)
    if entry.kind == "unsubscribe":
        return Unsubscribe.from_payload(payload)
    return Complaint.from_payload(payload)


def _with_attempts(entry: QueuedMessage, attempts: int) -> QueuedMessage:
    return replace(entry, attempts=attempts)
