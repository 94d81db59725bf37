"""The outbound queue: messages on their way to the relay, and what became of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..model.deliverability import Bounce
from ..model.messages import MessageHeaders
from .events import record_many
from .feedback import Failure, SendRef, record_failures
from .prepared import Prepared
from .queue import insert_messages
from .reputation import record_sends
from .scope import Tx
from .suppressions import clear_soft_bounces
from .tables import messages_table, new_id, outbound_table, utcnow

__all__ = [
    "KeyedSend",
    "NewOutbound",
    "OutboundItem",
    "OutboundResult",
    "OutboundView",
    "claim_due",
    "count_outbound",
    "get_outbound",
    "give_back",
    "list_outbound",
    "next_due",
    "queue_outbound",
    "record_results",
    "sends_by_key",
]

_out = outbound_table
_messages = messages_table

# The statements every send and every result runs, compiled once (store/prepared.py).
_insert_outbound = Prepared(
    sa.insert(_out),
    columns=(
        "application_id",
        "grant_id",
        "message_id",
        "verp_token",
        "mail_from",
        "recipients",
        "status",
        "attempts",
        "not_before",
        "idempotency_key",
        "created_at",
        "updated_at",
    ),
)
_record_result = Prepared(
    sa.update(_out)
    .where(_out.c.id == sa.bindparam("oid"))
    .values(
        status=sa.bindparam("new_status"),
        attempts=sa.bindparam("new_attempts"),
        not_before=sa.bindparam("new_not_before"),
        lease_owner=sa.null(),
        lease_until=sa.null(),
        last_code=sa.bindparam("code"),
        last_response=sa.bindparam("response"),
        recipients=sa.bindparam("new_recipients", type_=_out.c.recipients.type),
        updated_at=sa.bindparam("now", type_=_out.c.updated_at.type),
    )
)


@dataclass(frozen=True, slots=True)
class OutboundItem:
    """A message claimed for sending."""

    id: int
    grant_id: str
    message_id: str
    header_message_id: str | None
    verp_token: str
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    attempts: int

    def as_send(self) -> SendRef:
        """This message as the bounces about it name it."""
        return SendRef(
            self.id, self.grant_id, self.message_id, self.header_message_id, self.recipients
        )


@dataclass(frozen=True, slots=True)
class OutboundResult:
    """What happened to one claimed message, to be recorded.

    ``status`` is the new state: ``sent``, ``captured``, ``bounced`` (no
    recipient left) or ``pending`` (deferred until ``not_before``).
    ``events`` are ``(type, payload)`` pairs to append to the outbox.
    """

    item: OutboundItem
    status: str
    code: int | None = None
    response: str | None = None
    not_before: float = 0.0
    recipients: tuple[str, ...] | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    """Recipients the relay refused for good (or whose retries ran out)."""


@dataclass(frozen=True, slots=True)
class OutboundView:
    """An outbound message as operators see it (``mailfleet outbox``)."""

    id: int
    grant_id: str
    status: str
    mail_from: str
    recipients: tuple[str, ...]
    subject: str | None
    attempts: int
    last_code: int | None
    last_response: str | None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class NewOutbound:
    """A built, signed message to store and queue for sending."""

    grant_id: str
    raw: bytes
    headers: MessageHeaders
    recipients: tuple[str, ...]
    verp_token: str
    mail_from: str
    thread_id: str
    thread_subject: str | None
    not_before: float = 0.0
    """When it may leave (epoch seconds): later than now when paced or deferred."""
    idempotency_key: str | None = None
    """The digest of the send's idempotency key (:func:`~mailfleet.store.idempotency.digest`)."""


@dataclass(frozen=True, slots=True)
class KeyedSend:
    """A send already queued under an idempotency key: what its first answer said."""

    outbound_id: int
    grant_id: str
    message_id: str
    """mailfleet's id of the stored message."""
    header_message_id: str | None
    thread_id: str | None
    not_before: float
    status: str


def sends_by_key(tx: Tx, keys: Sequence[str]) -> dict[str, KeyedSend]:
    """The sends of the application queued under these idempotency key digests."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = tx.conn.execute(
        sa.select(
            _out.c.id,
            _out.c.grant_id,
            _out.c.message_id,
            _out.c.idempotency_key,
            _out.c.not_before,
            _out.c.status,
            _messages.c.message_id.label("header_message_id"),
            _messages.c.thread_id,
        )
        .join(_messages, _messages.c.id == _out.c.message_id)
        .where(_out.c.application_id == tx.application_id, _out.c.idempotency_key.in_(wanted))
    )
    return {
        row.idempotency_key: KeyedSend(
            outbound_id=row.id,
            grant_id=row.grant_id,
            message_id=row.message_id,
            header_message_id=row.header_message_id,
            thread_id=row.thread_id,
            not_before=row.not_before,
            status=row.status,
        )
        for row in rows
    }


def queue_outbound(tx: Tx, items: Sequence[NewOutbound]) -> list[str]:
    """Store each message in its grant's sent folder and queue it for sending, with
    its ``message.queued`` event: three statements for the whole batch."""
    conn = tx.conn
    if not items:
        return []
    now = utcnow()
    ids = [new_id() for _ in items]
    insert_messages.execute_many(
        conn,
        [
            {
                "id": stored_id,
                "application_id": tx.application_id,
                "grant_id": item.grant_id,
                "direction": "out",
                "folder": "sent",
                "message_id": item.headers.message_id,
                "thread_id": item.thread_id,
                "thread_subject": (item.thread_subject or "")[:255] or None,
                "subject": item.headers.subject,
                "sender": item.headers.sender,
                "recipients": list(item.recipients),
                "size": len(item.raw),
                "headers": [list(h) for h in item.headers.headers],
                "source_key": None,
                "raw": item.raw,
                "authentication": None,
                "read": False,
                "spam": None,
                "created_at": now,
            }
            for stored_id, item in zip(ids, items, strict=True)
        ],
    )
    _insert_outbound.execute_many(
        conn,
        [
            {
                "application_id": tx.application_id,
                "grant_id": item.grant_id,
                "message_id": stored_id,
                "verp_token": item.verp_token,
                "mail_from": item.mail_from,
                "recipients": list(item.recipients),
                "status": "pending",
                "attempts": 0,
                "not_before": item.not_before,
                "idempotency_key": item.idempotency_key,
                "created_at": now,
                "updated_at": now,
            }
            for stored_id, item in zip(ids, items, strict=True)
        ],
    )
    record_many(
        tx,
        "message.queued",
        (
            (
                item.grant_id,
                {
                    "grant_id": item.grant_id,
                    "message_id": stored_id,
                    "header_message_id": item.headers.message_id,
                    "to": list(item.recipients),
                    "subject": item.headers.subject,
                    "thread_id": item.thread_id,
                },
            )
            for stored_id, item in zip(ids, items, strict=True)
        ),
    )
    return ids


def next_due(tx: Tx) -> float | None:
    """When the application's earliest pending message falls due (epoch seconds), if any."""
    due: float | None = tx.conn.execute(
        sa.select(sa.func.min(_out.c.not_before)).where(
            _out.c.application_id == tx.application_id, _out.c.status == "pending"
        )
    ).scalar()
    return due


def claim_due(tx: Tx, worker: str, *, now: float, lease: float, limit: int) -> list[OutboundItem]:
    """Lease up to ``limit`` due messages of the application to this worker (others skip them)."""
    conn = tx.conn
    due = (
        sa.select(_out.c.id)
        .where(
            _out.c.application_id == tx.application_id,
            _out.c.status == "pending",
            _out.c.not_before <= now,
            sa.or_(_out.c.lease_until.is_(None), _out.c.lease_until < now),
        )
        .order_by(_out.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    conn.execute(
        sa.update(_out)
        .where(_out.c.id.in_(ids))
        .values(lease_owner=worker, lease_until=now + lease)
    )
    rows = conn.execute(
        sa.select(
            _out.c.id,
            _out.c.grant_id,
            _out.c.message_id,
            _out.c.verp_token,
            _out.c.mail_from,
            _out.c.recipients,
            _out.c.attempts,
            _messages.c.raw,
            _messages.c.message_id.label("header_message_id"),
        )
        .join(_messages, _messages.c.id == _out.c.message_id)
        .where(_out.c.id.in_(ids))
        .order_by(_out.c.id)
    )
    return [
        OutboundItem(
            id=row.id,
            grant_id=row.grant_id,
            message_id=row.message_id,
            header_message_id=row.header_message_id,
            verp_token=row.verp_token,
            mail_from=row.mail_from,
            recipients=tuple(row.recipients),
            raw=row.raw or b"",
            attempts=row.attempts,
        )
        for row in rows
    ]


def give_back(tx: Tx, ids: Sequence[int], worker: str) -> None:
    """End ``worker``'s lease on these messages, unsent: due again, no attempt counted."""
    if ids:
        tx.conn.execute(
            sa.update(_out)
            .where(
                _out.c.id.in_(list(ids)),
                _out.c.lease_owner == worker,
                _out.c.status == "pending",
            )
            .values(lease_owner=None, lease_until=None)
        )


def record_results(
    tx: Tx, results: Sequence[OutboundResult], *, soft_bounce_limit: int = 0
) -> set[str]:
    """Store the outcome of each send and its events: one statement per kind.

    Failures are recorded as :func:`~mailfleet.store.feedback.record_failures`
    records every bounce; a recipient delivered to has no soft bounces in a
    row any more. Returns the grants given work (``on_bounce`` calls).
    """
    conn = tx.conn
    if not results:
        return set()
    now = utcnow()
    _record_result.execute_many(
        conn,
        [
            {
                "oid": result.item.id,
                "new_status": result.status,
                "new_attempts": result.item.attempts + 1,
                "new_not_before": result.not_before,
                "code": result.code,
                "response": (result.response or "")[:2000] or None,
                "new_recipients": list(result.recipients or result.item.recipients),
                "now": now,
            }
            for result in results
        ],
    )
    by_type: dict[str, list[tuple[str | None, dict[str, Any]]]] = {}
    for result in results:
        for kind, payload in result.events:
            by_type.setdefault(kind, []).append((result.item.grant_id, payload))
    for kind, items in by_type.items():
        record_many(tx, kind, items)
    if soft_bounce_limit > 0:  # with no limit no count is kept, and none needs clearing
        sent = by_type.get("message.sent", ())
        clear_soft_bounces(tx, (r for _, payload in sent for r in payload["recipients"]))
    # Each recipient's final answer is a send in the reputation windows (a refusal too),
    # counted before the refusals are recorded as bounces of it.
    record_sends(tx, [send for result in results for send in _final_sends(result)])
    return record_failures(
        tx, [f for result in results for f in result.failures], soft_bounce_limit=soft_bounce_limit
    )


def _final_sends(result: OutboundResult) -> list[tuple[int, str, str]]:
    """``(outbound id, grant id, recipient)`` of each recipient answered for good."""
    item = result.item
    delivered = [
        recipient
        for kind, payload in result.events
        if kind == "message.sent"
        for recipient in payload.get("recipients", ())
    ]
    refused = [f.record.recipient for f in result.failures if isinstance(f.record, Bounce)]
    return [(item.id, item.grant_id, recipient) for recipient in (*delivered, *refused)]


def _view(row: Any, *, with_raw: bool) -> OutboundView:
    return OutboundView(
        id=row.id,
        grant_id=row.grant_id,
        status=row.status,
        mail_from=row.mail_from,
        recipients=tuple(row.recipients),
        subject=row.subject,
        attempts=row.attempts,
        last_code=row.last_code,
        last_response=row.last_response,
        raw=row.raw if with_raw else None,
    )


def _select_views() -> sa.Select[Any]:
    return sa.select(
        _out.c.id,
        _out.c.grant_id,
        _out.c.status,
        _out.c.mail_from,
        _out.c.recipients,
        _out.c.attempts,
        _out.c.last_code,
        _out.c.last_response,
        _messages.c.subject,
        _messages.c.raw,
    ).join(_messages, _messages.c.id == _out.c.message_id)


def count_outbound(tx: Tx, *, status: str | None = None) -> int:
    """How many outbound messages of the application there are (in ``status``)."""
    query = sa.select(sa.func.count()).where(*_filters(tx, status))
    return int(tx.conn.execute(query).scalar_one())


def list_outbound(
    tx: Tx, *, status: str | None = None, limit: int = 100, before: int | None = None
) -> list[OutboundView]:
    """Outbound messages of the application, newest first (older than the id ``before``)."""
    conn = tx.conn
    query = _select_views().where(*_filters(tx, status))
    if before is not None:
        query = query.where(_out.c.id < before)
    rows = conn.execute(query.order_by(_out.c.id.desc()).limit(limit))
    return [_view(row, with_raw=False) for row in rows]


def _filters(tx: Tx, status: str | None) -> list[sa.ColumnElement[bool]]:
    conditions = [_out.c.application_id == tx.application_id]
    if status is not None:
        conditions.append(_out.c.status == status)
    return conditions


def get_outbound(tx: Tx, outbound_id: int) -> OutboundView | None:
    """One outbound message with its raw bytes."""
    conn = tx.conn
    row = conn.execute(
        _select_views().where(_out.c.application_id == tx.application_id, _out.c.id == outbound_id)
    ).first()
    return None if row is None else _view(row, with_raw=True)
