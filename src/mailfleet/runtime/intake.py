"""``Fleet.deliver``: the one inbound entry point, with group commit.

Every transport hands a message to :meth:`Intake.deliver`, which returns only
once the message and its queue entry are committed. Concurrent deliveries
are gathered and committed together in one transaction (group commit), so
the cost of a commit is shared by every message that waited for it. The
same transaction resolves each recipient grant and checks its backlog
against the queue limit: a full queue refuses the message
(:class:`~mailfleet.QueueFull`) and stores nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
import sqlalchemy as sa
from anyio.abc import TaskStatus
from sqlalchemy.engine import Connection

from ..model.errors import GrantNotFound, QueueFull
from ..model.messages import InboundMessage, MessageHeaders, parse_headers
from ..store import queue
from ..store.database import Database
from ..store.tables import grants_table

__all__ = ["Intake"]

_BATCH = 1000


@dataclass(slots=True, eq=False)
class _Pending:
    key: str
    raw: bytes
    source_key: str | None
    headers: MessageHeaders
    done: anyio.Event = field(default_factory=anyio.Event)
    result: InboundMessage | None = None
    error: Exception | None = None


class Intake:
    """Commits deliveries in batches; one background task per fleet."""

    def __init__(
        self,
        database: Database,
        application_id: str,
        *,
        queue_limit: int,
        committed: Callable[[set[str]], None],
    ) -> None:
        self._db = database
        self._app_id = application_id
        self._limit = queue_limit
        self.committed = committed
        self._pending: list[_Pending] = []
        self._wakeup = anyio.Event()
        self._running = False

    async def deliver(
        self, grant: str, raw: bytes, *, source_key: str | None = None
    ) -> InboundMessage:
        """Store ``raw`` for ``grant`` (id or address); return once committed.

        With a ``source_key``, a message the grant already has under that key
        is returned as it is, and nothing new is queued.
        """
        if not self._running:
            raise RuntimeError("the fleet is not open: use `async with Fleet(...) as fleet`")
        # Parsed here, not in the transaction: the store's writer is not held for it.
        pending = _Pending(grant, raw, source_key, parse_headers(raw))
        self._pending.append(pending)
        self._wakeup.set()
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit pending deliveries until cancelled."""
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                while self._pending:
                    batch, self._pending = self._pending[:_BATCH], self._pending[_BATCH:]
                    with anyio.CancelScope(shield=True):
                        await self._commit(batch)
        finally:
            self._running = False
            for pending in self._pending:
                pending.error = RuntimeError("the fleet closed before the message was stored")
                pending.done.set()

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await self._db.write(lambda conn: self._store(conn, batch))
        except Exception as exc:  # nothing was stored
            for pending in batch:
                pending.result = None
                pending.error = pending.error or exc
        else:
            self.committed({p.result.grant_id for p in batch if p.result is not None})
        for pending in batch:
            pending.done.set()

    def _store(self, conn: Connection, batch: Sequence[_Pending]) -> None:
        for pending in batch:  # a retried transaction starts clean
            pending.result = pending.error = None
        grant_ids = _resolve(conn, self._app_id, {p.key for p in batch})
        waiting = queue.backlog(conn, set(grant_ids.values()))
        seen = queue.by_source(
            conn,
            (
                (grant_ids[p.key], p.source_key)
                for p in batch
                if p.source_key is not None and p.key in grant_ids
            ),
        )
        accepted: list[_Pending] = []
        for pending in batch:
            grant_id = grant_ids.get(pending.key)
            source = None if grant_id is None else (grant_id, pending.source_key or "")
            if grant_id is None:
                pending.error = GrantNotFound(pending.key)
            elif pending.source_key is not None and source in seen:
                pending.result = seen[source]  # delivered before: idempotent
            elif waiting.get(grant_id, 0) >= self._limit:
                pending.error = QueueFull(grant_id, self._limit)
            else:
                waiting[grant_id] = waiting.get(grant_id, 0) + 1
                accepted.append(pending)
        unique: dict[tuple[str, str] | int, _Pending] = {}
        for pending in accepted:  # one key twice in a batch: store it once
            grant_id = grant_ids[pending.key]
            unique.setdefault(
                (grant_id, pending.source_key) if pending.source_key else id(pending), pending
            )
        stored = queue.enqueue(
            conn,
            self._app_id,
            [queue.Delivery(grant_ids[p.key], p.raw, p.source_key) for p in unique.values()],
        )
        by_key = dict(zip(unique, stored, strict=True))
        for pending in accepted:
            grant_id = grant_ids[pending.key]
            pending.result = by_key[
                (grant_id, pending.source_key) if pending.source_key else id(pending)
            ]


def _resolve(conn: Connection, application_id: str, keys: set[str]) -> dict[str, str]:
    """Map grant ids and addresses to the ids of live grants of the application."""
    addresses = {k.strip().lower(): k for k in keys if "@" in k}
    ids = [k for k in keys if "@" not in k]
    found: dict[str, str] = {}
    table = grants_table
    if ids:
        rows = conn.execute(
            sa.select(table.c.id).where(
                table.c.application_id == application_id, table.c.id.in_(ids)
            )
        )
        found.update((grant_id, grant_id) for grant_id in rows.scalars())
    if addresses:
        rows = conn.execute(
            sa.select(table.c.address, table.c.id).where(
                table.c.application_id == application_id, table.c.address.in_(list(addresses))
            )
        )
        found.update((addresses[address], grant_id) for address, grant_id in rows.all())
    return found
