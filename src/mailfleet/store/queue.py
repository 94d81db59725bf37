"""Durable per-grant queues and the leases that give each grant to one worker.

A delivered message is a ``messages`` row plus a ``queue_entries`` row,
written in one transaction. A worker *claims* grants that have ready entries
by taking their lease (an upsert that succeeds only where no live lease
exists, so two workers never hold one grant), loads their entries in id
order, and deletes each entry in the transaction that records its
completion. A worker that dies stops renewing its leases; once they expire,
another worker claims the grants and runs their unfinished entries, in order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..model.authentication import Authentication
from ..model.messages import MessageHeaders, StoredMessage
from ..model.spam import SpamVerdict
from .dialect import insert
from .events import record, record_many
from .prepared import Prepared
from .scope import ServedAgents, Tx
from .tables import (
    grants_table,
    leases_table,
    messages_table,
    new_id,
    queue_table,
    utcnow,
)
from .threads import ThreadHint, assign_threads
from .timestamps import aware

__all__ = [
    "Claim",
    "DeadLetter",
    "Delivery",
    "QueuedMessage",
    "backlog",
    "by_source",
    "claim",
    "complete",
    "dead_letter_count",
    "dead_letters",
    "enqueue",
    "insert_messages",
    "lease_rows",
    "load",
    "ready_count",
    "release",
    "renew",
    "replay",
    "retry_later",
    "stored_message",
    "to_dead_letter",
]

_queue = queue_table
_leases = leases_table
_messages = messages_table
_grants = grants_table


_MESSAGE_COLUMNS = (
    "id",
    "application_id",
    "grant_id",
    "direction",
    "folder",
    "message_id",
    "thread_id",
    "thread_subject",
    "subject",
    "sender",
    "recipients",
    "size",
    "headers",
    "source_key",
    "raw",
    "authentication",
    "read",
    "spam",
    "created_at",
)
insert_messages = Prepared(sa.insert(_messages), columns=_MESSAGE_COLUMNS)
"""Stores messages, inbound and outbound (the outbox's sent copies): every column named."""
# inline: no RETURNING of the new ids (PostgreSQL), which nothing reads
_insert_entries = Prepared(
    sa.insert(_queue).inline(),
    columns=(
        "application_id",
        "grant_id",
        "message_id",
        "kind",
        "status",
        "attempts",
        "created_at",
    ),
)
_grow_storage = Prepared(
    sa.update(_grants)
    .where(_grants.c.id == sa.bindparam("gid"))
    .values(stored_bytes=_grants.c.stored_bytes + sa.bindparam("grown"))
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message to enqueue for one grant.

    ``source_key`` (e.g. ``imap:<uidvalidity>:<uid>``) makes the delivery
    idempotent: a grant stores one message per key.
    """

    grant_id: str
    raw: bytes
    source_key: str | None
    headers: MessageHeaders
    """Read by the runtime beforehand, outside the transaction: the store parses nothing."""
    references: tuple[str, ...] = ()
    """Message-IDs it refers to, most recent first (for threading)."""
    subject: str | None = None
    """The normalised subject (for threading)."""
    is_reply: bool = False
    authentication: Authentication | None = None
    """What the MX verified (stored as JSON in ``messages.authentication``)."""
    folder: str = "inbox"
    """Where the inbound rules filed it (``spam``, ``archive``, ``trash``, a folder)."""
    read: bool = False
    """Filed as read (a ``mark_read`` rule)."""
    spam: SpamVerdict | None = None
    """Its spam verdict: spam is filed in the ``spam`` folder and queued for ``on_spam``."""


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """A queue entry with its message, as a worker runs it."""

    entry_id: int
    grant_id: str
    message: StoredMessage
    attempts: int
    not_before: float | None
    kind: str = "message"
    """``message`` (for ``on_message``), ``spam`` (``on_spam``), ``bounce``, ``complaint``
    or ``unsubscribe``."""
    payload: dict[str, Any] | None = None
    """The bounce, complaint or unsubscribe record, for those kinds."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message whose handler failed on every attempt."""

    entry_id: int
    grant_id: str
    message_id: str
    attempts: int
    error: str | None
    subject: str | None


def enqueue(tx: Tx, deliveries: Sequence[Delivery]) -> list[StoredMessage]:
    """Store each message and its queue entry; return the messages as handlers will see them."""
    conn = tx.conn
    now = utcnow()
    messages: list[StoredMessage] = []
    message_rows: list[dict[str, Any]] = []
    parsed = [d.headers for d in deliveries]
    threads = assign_threads(
        conn,
        [
            ThreadHint(d.grant_id, h.message_id, d.references, d.subject, d.is_reply)
            for d, h in zip(deliveries, parsed, strict=True)
        ],
    )
    for delivery, headers, thread_id in zip(deliveries, parsed, threads, strict=True):
        message = StoredMessage(
            id=new_id(),
            grant_id=delivery.grant_id,
            raw=delivery.raw,
            sender=headers.sender,
            recipients=headers.recipients,
            subject=headers.subject,
            message_id=headers.message_id,
            received_at=now,
            headers=headers.headers,
            thread_id=thread_id,
            authentication=delivery.authentication,
            folder=_folder(delivery),
            spam=delivery.spam,
        )
        messages.append(message)
        message_rows.append(
            {
                "id": message.id,
                "application_id": tx.application_id,
                "grant_id": message.grant_id,
                "direction": "in",
                "folder": message.folder,
                "message_id": (message.message_id or "")[:998] or None,
                "thread_id": thread_id,
                "thread_subject": (delivery.subject or "")[:255] or None,
                "subject": message.subject,
                "sender": (message.sender or "")[:320] or None,
                "recipients": list(message.recipients),
                "size": len(message.raw),
                "headers": [list(h) for h in message.headers],
                "source_key": delivery.source_key,
                "raw": message.raw,
                "authentication": (
                    None if delivery.authentication is None else delivery.authentication.as_json()
                ),
                "read": delivery.read,
                "spam": None if delivery.spam is None else delivery.spam.as_json(),
                "created_at": now,
            }
        )
    if not messages:
        return messages
    insert_messages.execute_many(conn, message_rows)
    grown: dict[str, int] = {}
    for message in messages:
        grown[message.grant_id] = grown.get(message.grant_id, 0) + len(message.raw)
    _grow_storage.execute_many(conn, [{"gid": g, "grown": n} for g, n in sorted(grown.items())])
    _insert_entries.execute_many(
        conn,
        [
            {
                "application_id": tx.application_id,
                "grant_id": m.grant_id,
                "message_id": m.id,
                "kind": "spam" if m.folder == "spam" else "message",
                "status": "ready",
                "attempts": 0,
                "created_at": now,
            }
            for m in messages
        ],
    )
    record_many(
        tx,
        "message.received",
        ((m.grant_id, _received(m)) for m in messages),
    )
    return messages


def _folder(delivery: Delivery) -> str:
    """Where a message is filed: where an inbound rule put it, else ``spam`` when its
    score reached the threshold, else the inbox."""
    if delivery.folder != "inbox":
        return delivery.folder
    return "spam" if delivery.spam is not None and delivery.spam.spam else "inbox"


def _received(message: StoredMessage) -> dict[str, Any]:
    """The ``message.received`` payload; a scored message says its folder and score."""
    payload: dict[str, Any] = {
        "grant_id": message.grant_id,
        "message_id": message.id,
        "subject": message.subject,
    }
    if message.spam is not None:
        payload["folder"] = message.folder
        payload["spam_score"] = message.spam.score
    return payload


def by_source(tx: Tx, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], StoredMessage]:
    """Messages of the application already stored under ``(grant_id, source_key)``."""
    conn = tx.conn
    # Almost every key is new: ask for ids only, a grant and up to
    # _KEYS_PER_LOOKUP keys at a time, and read the rows of the few found.
    per_grant: dict[str, list[str]] = {}
    for grant_id, source_key in sorted(set(keys)):
        per_grant.setdefault(grant_id, []).append(source_key)
    found = [
        row[0]
        for grant_id, wanted in per_grant.items()
        for start in range(0, len(wanted), _KEYS_PER_LOOKUP)
        for row in _ids_by_source.fetch(
            conn, {"grant_id": grant_id, **_padded(wanted[start : start + _KEYS_PER_LOOKUP])}
        )
    ]
    if not found:
        return {}
    rows = conn.execute(
        sa.select(_messages).where(
            _messages.c.id.in_(found), _messages.c.application_id == tx.application_id
        )
    )
    return {(row.grant_id, row.source_key): _stored(row, row.id, row.message_id) for row in rows}


_KEYS_PER_LOOKUP = 32
_ids_by_source = Prepared(
    sa.select(_messages.c.id).where(
        _messages.c.grant_id == sa.bindparam("grant_id"),
        _messages.c.source_key.in_(
            [sa.bindparam(f"key{n}", type_=sa.String) for n in range(_KEYS_PER_LOOKUP)]
        ),
    )
)


def _padded(source_keys: Sequence[str]) -> dict[str, str | None]:
    """The lookup's key parameters; unused ones are NULL, which matches nothing."""
    return {
        f"key{n}": source_keys[n] if n < len(source_keys) else None for n in range(_KEYS_PER_LOOKUP)
    }


def stored_message(row: Any) -> StoredMessage:
    """The stored message of a row of ``messages`` (all its columns)."""
    return _stored(row, row.id, row.message_id)


def _stored(row: Any, message_id: str, header_id: str | None, attempt: int = 1) -> StoredMessage:
    """A stored message from a row holding the ``messages`` columns."""
    return StoredMessage(
        id=message_id,
        grant_id=row.grant_id,
        raw=row.raw or b"",
        sender=row.sender,
        recipients=tuple(row.recipients),
        subject=row.subject,
        message_id=header_id,
        received_at=aware(row.created_at),
        attempt=attempt,
        headers=tuple((name, value) for name, value in row.headers),
        thread_id=row.thread_id,
        authentication=_authentication(row.authentication),
        folder=row.folder,
        spam=None if row.spam is None else SpamVerdict.from_json(row.spam),
    )


def _authentication(data: Any) -> Authentication | None:
    """The stored verification results, or None (mail that did not come through the MX)."""
    return None if data is None else Authentication.from_json(data)


def backlog(tx: Tx, grant_ids: Iterable[str]) -> dict[str, int]:
    """Ready entries waiting, per grant, for the given grants of the application."""
    wanted = sorted(set(grant_ids))
    rows = tx.conn.execute(
        sa.select(_queue.c.grant_id, sa.func.count())
        .where(
            _queue.c.grant_id.in_(wanted),
            _queue.c.status == "ready",
            _queue.c.application_id == tx.application_id,
        )
        .group_by(_queue.c.grant_id)
    )
    return {grant_id: count for grant_id, count in rows.all()}


@dataclass(frozen=True, slots=True)
class Claim:
    """What :func:`claim` took."""

    grants: list[str]
    """Grants newly claimed: their leases were free, expired, or another worker's."""
    renewed: list[str]
    """Grants of the caller's ``held`` whose lease had lapsed and still named the
    caller (no other worker took them since): renewed, not claimed anew."""
    contended: bool = False
    """Some grants with work were being claimed by another worker at the same moment
    and were skipped: looking again soon may find more (theirs will be excluded)."""


CLAIM_LOCKS = 0x6D66
"""The first key of the PostgreSQL advisory locks a claim takes on each grant it tries
(``pg_try_advisory_xact_lock(CLAIM_LOCKS, hashtext(grant_id))``); the two-key space is
apart from the migrations' one-key lock."""


def claim(
    tx: Tx,
    worker: str,
    *,
    now: float,
    ttl: float,
    limit: int,
    held: Collection[str] = frozenset(),
) -> Claim:
    """Take the lease of up to ``limit`` grants with ready work and no live lease.

    Only grants of the scope's application whose agent class the scope serves
    are taken; the others' queues stay untouched for the processes that serve them.
    A grant in ``held`` (the caller runs it) whose lapsed lease still names
    ``worker`` is renewed instead: the caller's loaded work for it stays valid.

    On PostgreSQL, workers claiming at the same moment do not wait for each other:
    each tries a transaction-scoped advisory lock per grant and skips the grants
    another claim holds (as ``FOR UPDATE SKIP LOCKED`` would, for rows that may not
    exist yet); it looks at twice ``limit`` candidates so that the second of two
    claims finds others. The upsert's ``WHERE`` stays the guard: a lease taken is
    one that was free or expired when the upsert ran.
    """
    served = served_condition(tx.agents)
    if served is None:
        return Claim([], [])
    conn = tx.conn
    postgres = conn.dialect.name == "postgresql"
    candidates = (
        sa.select(_queue.c.grant_id, _leases.c.worker)
        .join(_grants, _grants.c.id == _queue.c.grant_id)
        .outerjoin(_leases, _leases.c.grant_id == _queue.c.grant_id)
        .where(
            _queue.c.application_id == tx.application_id,
            _queue.c.status == "ready",
            served,
            sa.or_(_leases.c.grant_id.is_(None), _leases.c.expires_at <= now),
        )
        .group_by(_queue.c.grant_id, _leases.c.worker)
        .order_by(sa.func.min(_queue.c.id))
        .limit(limit * 2 if postgres else limit)
    )
    found = conn.execute(candidates).all()
    lapsed = [row.grant_id for row in found if row.worker == worker and row.grant_id in held]
    grant_ids = [row.grant_id for row in found if row.grant_id not in held]
    # Atomic: renewed only while the row still names this worker.
    renewed = sorted(renew(tx, worker, lapsed, expires_at=now + ttl)) if lapsed else []
    if not grant_ids:
        return Claim([], renewed)
    if postgres:
        taken = _claim_skipping(tx, worker, grant_ids, expires_at=now + ttl, now=now, limit=limit)
        return Claim(taken, renewed, contended=len(taken) < min(limit, len(grant_ids)))
    rows = insert(conn, _leases).values(
        [{"grant_id": g, "worker": worker, "expires_at": now + ttl} for g in grant_ids]
    )
    statement = rows.on_conflict_do_update(
        index_elements=[_leases.c.grant_id],
        set_={"worker": rows.excluded.worker, "expires_at": rows.excluded.expires_at},
        where=_leases.c.expires_at <= now,
    ).returning(_leases.c.grant_id)
    taken = list(conn.execute(statement).scalars())
    return Claim(taken, renewed, contended=len(taken) < len(grant_ids))


def _claim_skipping(
    tx: Tx, worker: str, grant_ids: list[str], *, expires_at: float, now: float, limit: int
) -> list[str]:
    """PostgreSQL's claim: one upsert of the first ``limit`` of ``grant_ids`` whose
    advisory lock it got, the others skipped without waiting; the grants it took.

    No ``ORDER BY``: PostgreSQL scans a ``VALUES`` list in its order and the
    ``LIMIT`` stops the scan, so a lock is tried on each grant up to the last one
    taken, and no further (a sort would try them all first)."""
    wanted = sa.values(sa.column("grant_id", sa.String), name="wanted").data(
        [(g,) for g in grant_ids]
    )
    tried = (
        sa.select(
            wanted.c.grant_id,
            sa.literal(worker, sa.String).label("worker"),
            sa.literal(expires_at, sa.Float).label("expires_at"),
        )
        .where(sa.func.pg_try_advisory_xact_lock(CLAIM_LOCKS, sa.func.hashtext(wanted.c.grant_id)))
        .limit(limit)
    )
    rows = insert(tx.conn, _leases).from_select(["grant_id", "worker", "expires_at"], tried)
    statement = rows.on_conflict_do_update(
        index_elements=[_leases.c.grant_id],
        set_={"worker": rows.excluded.worker, "expires_at": rows.excluded.expires_at},
        where=_leases.c.expires_at <= now,
    ).returning(_leases.c.grant_id)
    return list(tx.conn.execute(statement).scalars())


def load(tx: Tx, grant_ids: Sequence[str], *, per_grant: int) -> list[QueuedMessage]:
    """Ready entries of the grants, oldest first, at most ``per_grant`` each.

    The caller holds the grants' leases and has nothing of theirs in flight.
    """
    if not grant_ids:
        return []
    conn = tx.conn
    rank = (
        sa.func.row_number()
        .over(partition_by=_queue.c.grant_id, order_by=_queue.c.id)
        .label("rank")
    )
    ranked = (
        sa.select(
            _queue.c.id,
            _queue.c.grant_id,
            _queue.c.attempts,
            _queue.c.not_before,
            _queue.c.message_id,
            _queue.c.kind,
            _queue.c.payload,
            rank,
        )
        .where(
            _queue.c.grant_id.in_(grant_ids),
            _queue.c.status == "ready",
            _queue.c.application_id == tx.application_id,
        )
        .subquery()
    )
    rows = conn.execute(
        sa.select(
            ranked,
            _messages.c.raw,
            _messages.c.sender,
            _messages.c.recipients,
            _messages.c.subject,
            _messages.c.message_id.label("header_message_id"),
            _messages.c.headers,
            _messages.c.thread_id,
            _messages.c.authentication,
            _messages.c.folder,
            _messages.c.spam,
            _messages.c.created_at,
        )
        .join(_messages, _messages.c.id == ranked.c.message_id)
        .where(ranked.c.rank <= per_grant)
        .order_by(ranked.c.id)
    )
    return [
        QueuedMessage(
            entry_id=row.id,
            grant_id=row.grant_id,
            attempts=row.attempts,
            not_before=row.not_before,
            message=_stored(row, row.message_id, row.header_message_id, row.attempts + 1),
            kind=row.kind,
            payload=row.payload,
        )
        for row in rows
    ]


def complete(
    tx: Tx,
    entry_ids: Sequence[int],
    states: dict[str, dict[str, Any]],
    defects: dict[str, list[str]] | None = None,
) -> None:
    """Delete handled entries, save the agents' states and the MIME defects found."""
    conn, application_id = tx.conn, tx.application_id
    _delete_entry.execute_many(conn, [{"eid": e, "app": application_id} for e in entry_ids])
    if defects:
        conn.execute(
            sa.update(_messages)
            .where(
                _messages.c.id == sa.bindparam("mid"), _messages.c.application_id == application_id
            )
            .values(defects=sa.bindparam("found")),
            [{"mid": m, "found": d} for m, d in defects.items()],
        )
    if states:
        conn.execute(
            sa.update(_grants)
            .where(
                _grants.c.id == sa.bindparam("grant_id"), _grants.c.application_id == application_id
            )
            .values(state=sa.bindparam("state")),
            [{"grant_id": g, "state": s} for g, s in states.items()],
        )


_delete_entry = Prepared(
    sa.delete(_queue).where(
        _queue.c.id == sa.bindparam("eid"), _queue.c.application_id == sa.bindparam("app")
    )
)


def retry_later(
    tx: Tx,
    entry: QueuedMessage,
    *,
    not_before: float,
    error: str,
) -> None:
    """Record a failed attempt; the entry runs again after ``not_before``."""
    conn = tx.conn
    conn.execute(
        sa.update(_queue)
        .where(_queue.c.id == entry.entry_id, _queue.c.application_id == tx.application_id)
        .values(attempts=entry.attempts + 1, not_before=not_before, last_error=error)
    )
    record(
        tx,
        "message.handler_failed",
        {
            "grant_id": entry.grant_id,
            "message_id": entry.message.id,
            "attempt": entry.attempts + 1,
            "error": error,
            "retry_at": not_before,
        },
        grant_id=entry.grant_id,
    )


def to_dead_letter(tx: Tx, entry: QueuedMessage, *, error: str) -> None:
    """Set a message aside after its last failed attempt; the grant's queue moves on."""
    conn = tx.conn
    conn.execute(
        sa.update(_queue)
        .where(_queue.c.id == entry.entry_id, _queue.c.application_id == tx.application_id)
        .values(status="dead", attempts=entry.attempts + 1, last_error=error, not_before=None)
    )
    record(
        tx,
        "message.dead_lettered",
        {
            "grant_id": entry.grant_id,
            "message_id": entry.message.id,
            "attempts": entry.attempts + 1,
            "error": error,
        },
        grant_id=entry.grant_id,
    )


def dead_letters(tx: Tx, *, limit: int = 100, after: int = 0) -> list[DeadLetter]:
    """Dead letters of the application, oldest first (after the entry id ``after``)."""
    conn = tx.conn
    rows = conn.execute(
        sa.select(
            _queue.c.id,
            _queue.c.grant_id,
            _queue.c.message_id,
            _queue.c.attempts,
            _queue.c.last_error,
            _messages.c.subject,
        )
        .join(_messages, _messages.c.id == _queue.c.message_id)
        .where(
            _queue.c.application_id == tx.application_id,
            _queue.c.status == "dead",
            _queue.c.id > after,
        )
        .order_by(_queue.c.id)
        .limit(limit)
    )
    return [
        DeadLetter(
            entry_id=row.id,
            grant_id=row.grant_id,
            message_id=row.message_id,
            attempts=row.attempts,
            error=row.last_error,
            subject=row.subject,
        )
        for row in rows
    ]


def replay(tx: Tx, entry_ids: Sequence[int] | None) -> int:
    """Queue dead letters again (all of them if ``entry_ids`` is None), behind the
    grant's current work, with fresh attempts; return how many."""
    conn = tx.conn
    query = sa.select(_queue.c.id, _queue.c.grant_id, _queue.c.message_id).where(
        _queue.c.application_id == tx.application_id, _queue.c.status == "dead"
    )
    if entry_ids is not None:
        query = query.where(_queue.c.id.in_(list(entry_ids)))
    dead = conn.execute(query.order_by(_queue.c.id)).all()
    if not dead:
        return 0
    conn.execute(sa.delete(_queue).where(_queue.c.id.in_([row.id for row in dead])))
    now = utcnow()
    conn.execute(
        sa.insert(_queue),
        [
            {
                "application_id": tx.application_id,
                "grant_id": row.grant_id,
                "message_id": row.message_id,
                "status": "ready",
                "attempts": 0,
                "created_at": now,
            }
            for row in dead
        ],
    )
    record_many(
        tx,
        "message.replayed",
        ((row.grant_id, {"grant_id": row.grant_id, "message_id": row.message_id}) for row in dead),
    )
    return len(dead)


def renew(tx: Tx, worker: str, grant_ids: Sequence[str], *, expires_at: float) -> set[str]:
    """Extend this worker's leases; return the grants it still holds."""
    conn = tx.conn
    held: set[str] = set()
    for start in range(0, len(grant_ids), 1000):
        chunk = grant_ids[start : start + 1000]
        held.update(
            conn.execute(
                sa.update(_leases)
                .where(_leases.c.worker == worker, _leases.c.grant_id.in_(chunk))
                .values(expires_at=expires_at)
                .returning(_leases.c.grant_id)
            ).scalars()
        )
    return held


def lease_rows(tx: Tx, grant_ids: Iterable[str]) -> dict[str, tuple[str, float]]:
    """The lease of each of ``grant_ids`` that has one: its worker and expiry.

    The fence of completions: a worker commits what it did for a grant only while
    the lease row names it (a claim by another worker would have named that one).
    The rows found are locked until the transaction ends (``FOR UPDATE`` on
    PostgreSQL; SQLite's write transactions exclude each other anyway), so no claim
    takes one over before the completions commit.
    """
    wanted = sorted(set(grant_ids))
    found: dict[str, tuple[str, float]] = {}
    for start in range(0, len(wanted), 1000):
        rows = tx.conn.execute(
            sa.select(_leases.c.grant_id, _leases.c.worker, _leases.c.expires_at)
            .where(_leases.c.grant_id.in_(wanted[start : start + 1000]))
            .with_for_update()
        )
        found.update({row.grant_id: (row.worker, row.expires_at) for row in rows})
    return found


def release(tx: Tx, worker: str, grant_ids: Sequence[str]) -> None:
    """Give up this worker's leases of the grants."""
    for start in range(0, len(grant_ids), 1000):
        tx.conn.execute(
            sa.delete(_leases).where(
                _leases.c.worker == worker, _leases.c.grant_id.in_(grant_ids[start : start + 1000])
            )
        )


def ready_count(tx: Tx, *, agents: ServedAgents | None = None) -> int:
    """Entries of the application still waiting to be handled (dead letters excluded);
    with ``agents``, only those of grants whose class is among them."""
    query = sa.select(sa.func.count()).where(
        _queue.c.application_id == tx.application_id, _queue.c.status == "ready"
    )
    if agents is not None:
        served = served_condition(agents)
        if served is None:
            return 0
        query = query.select_from(_queue.join(_grants, _grants.c.id == _queue.c.grant_id)).where(
            served
        )
    return int(tx.conn.execute(query).scalar_one())


def dead_letter_count(tx: Tx) -> int:
    """How many dead letters the application has."""
    return int(
        tx.conn.execute(
            sa.select(sa.func.count()).where(
                _queue.c.application_id == tx.application_id, _queue.c.status == "dead"
            )
        ).scalar_one()
    )


def states(tx: Tx, grant_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The saved agent state of each grant of the application that has one."""
    rows = tx.conn.execute(
        sa.select(_grants.c.id, _grants.c.state).where(
            _grants.c.id.in_(list(grant_ids)),
            _grants.c.application_id == tx.application_id,
            _grants.c.state.is_not(None),
        )
    )
    return {row.id: row.state for row in rows}


def served_condition(agents: ServedAgents) -> sa.ColumnElement[bool] | None:
    """Grants whose agent class is in ``agents`` (None: no grant is served)."""
    conditions = []
    if agents.names:
        conditions.append(_grants.c.agent.in_(sorted(agents.names)))
    if agents.unnamed:
        conditions.append(_grants.c.agent.is_(None))
    return sa.or_(*conditions) if conditions else None
