"""Reading a grant's mailbox: its messages (inbound and sent) and its threads.

Every function takes the grant's id and reads within the scope's application
*and* that grant: a message of another grant, or of another application, is
never found. Lists are newest first and paged by a cursor: the ``(created_at,
id)`` of the last item shown (``MessageRecord.cursor``,
:func:`~mailfleet.model.messages.parse_cursor`), which the ``messages_by_grant``
index serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..model.errors import MessageNotFound, ThreadNotFound
from ..model.messages import MessageRecord, StoredMessage, ThreadRecord
from .queue import stored_message
from .scope import Tx
from .tables import messages_table, outbound_table
from .timestamps import aware

__all__ = [
    "FOLDERS",
    "get_message",
    "get_stored",
    "get_thread",
    "list_messages",
    "list_threads",
]

FOLDERS = ("inbox", "spam", "sent")
"""The folders a grant's messages are in."""

_messages = messages_table
_out = outbound_table


def _columns() -> list[Any]:
    return [
        _messages.c.id,
        _messages.c.grant_id,
        _messages.c.direction,
        _messages.c.folder,
        _messages.c.message_id,
        _messages.c.thread_id,
        _messages.c.subject,
        _messages.c.sender,
        _messages.c.recipients,
        _messages.c.size,
        _messages.c.created_at,
        _out.c.status.label("delivery"),
        _out.c.not_before,
    ]


def _select(tx: Tx, grant_id: str, *extra: Any) -> sa.Select[Any]:
    return (
        sa.select(*_columns(), *extra)
        .select_from(
            _messages.outerjoin(
                _out,
                sa.and_(
                    _out.c.message_id == _messages.c.id,
                    _out.c.application_id == _messages.c.application_id,
                ),
            )
        )
        .where(_messages.c.application_id == tx.application_id, _messages.c.grant_id == grant_id)
    )


def _record(row: Any, *, with_raw: bool = False) -> MessageRecord:
    delivery = row.delivery if row.direction == "out" else None
    return MessageRecord(
        id=row.id,
        grant_id=row.grant_id,
        direction=row.direction,
        folder=row.folder,
        message_id=row.message_id,
        thread_id=row.thread_id,
        subject=row.subject,
        sender=row.sender,
        recipients=tuple(row.recipients or ()),
        size=row.size,
        created_at=aware(row.created_at),
        delivery=delivery,
        send_at=row.not_before if delivery == "pending" and row.not_before else None,
        headers=tuple((name, value) for name, value in row.headers) if with_raw else (),
        raw=(row.raw or b"") if with_raw else None,
    )


def list_messages(
    tx: Tx,
    grant_id: str,
    *,
    folder: str | None = None,
    thread_id: str | None = None,
    direction: str | None = None,
    since: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[MessageRecord]:
    """The grant's messages, newest first, after the cursor position ``after``."""
    query = _select(tx, grant_id)
    if folder is not None:
        query = query.where(_messages.c.folder == folder)
    if thread_id is not None:
        query = query.where(_messages.c.thread_id == thread_id)
    if direction is not None:
        query = query.where(_messages.c.direction == direction)
    if since is not None:
        query = query.where(_messages.c.created_at >= since)
    if after is not None:
        when, key = after
        query = query.where(
            sa.or_(
                _messages.c.created_at < when,
                sa.and_(_messages.c.created_at == when, _messages.c.id < key),
            )
        )
    query = query.order_by(_messages.c.created_at.desc(), _messages.c.id.desc()).limit(limit)
    return [_record(row) for row in tx.conn.execute(query)]


def get_message(tx: Tx, grant_id: str, message_id: str, *, field: str = "message") -> MessageRecord:
    """One message of the grant with its raw bytes and headers; MessageNotFound otherwise."""
    row = tx.conn.execute(
        _select(tx, grant_id, _messages.c.headers, _messages.c.raw).where(
            _messages.c.id == message_id
        )
    ).first()
    if row is None:
        raise MessageNotFound(message_id, field=field)
    return _record(row, with_raw=True)


def get_stored(tx: Tx, grant_id: str, message_id: str, *, field: str = "message") -> StoredMessage:
    """One message of the grant as handlers see it (to reply to it); MessageNotFound otherwise."""
    row = tx.conn.execute(
        sa.select(_messages).where(
            _messages.c.application_id == tx.application_id,
            _messages.c.grant_id == grant_id,
            _messages.c.id == message_id,
        )
    ).first()
    if row is None:
        raise MessageNotFound(message_id, field=field)
    return stored_message(row)


def list_threads(
    tx: Tx, grant_id: str, *, after: tuple[datetime, str] | None = None, limit: int = 100
) -> list[ThreadRecord]:
    """The grant's threads, the most recently active first, after the cursor position
    ``after`` (the last message time and id of the previous page's last thread)."""
    last = sa.func.max(_messages.c.created_at)
    query = (
        sa.select(
            _messages.c.thread_id,
            sa.func.count().label("count"),
            sa.func.min(_messages.c.created_at).label("first_at"),
            last.label("last_at"),
        )
        .where(
            _messages.c.application_id == tx.application_id,
            _messages.c.grant_id == grant_id,
            _messages.c.thread_id.is_not(None),
        )
        .group_by(_messages.c.thread_id)
    )
    if after is not None:
        when, key = after
        query = query.having(
            sa.or_(last < when, sa.and_(last == when, _messages.c.thread_id < key))
        )
    rows = tx.conn.execute(query.order_by(last.desc(), _messages.c.thread_id.desc()).limit(limit))
    return _threads(tx, grant_id, rows.all())


def get_thread(tx: Tx, grant_id: str, thread_id: str) -> tuple[ThreadRecord, list[MessageRecord]]:
    """One thread of the grant and its messages, oldest first; ThreadNotFound otherwise."""
    rows = tx.conn.execute(
        _select(tx, grant_id)
        .where(_messages.c.thread_id == thread_id)
        .order_by(_messages.c.created_at, _messages.c.id)
    ).all()
    if not rows:
        raise ThreadNotFound(thread_id)
    records = [_record(row) for row in rows]
    return _thread(grant_id, thread_id, records), records


def _threads(tx: Tx, grant_id: str, groups: Sequence[Any]) -> list[ThreadRecord]:
    """The records of the threads ``groups`` names (thread id, count, first, last)."""
    ids = [group.thread_id for group in groups]
    if not ids:
        return []
    rows = tx.conn.execute(
        sa.select(
            _messages.c.thread_id,
            _messages.c.subject,
            _messages.c.sender,
            _messages.c.recipients,
        )
        .where(
            _messages.c.application_id == tx.application_id,
            _messages.c.grant_id == grant_id,
            _messages.c.thread_id.in_(ids),
        )
        .order_by(_messages.c.created_at, _messages.c.id)
    )
    subjects: dict[str, str | None] = {}
    people: dict[str, dict[str, None]] = {thread: {} for thread in ids}
    for row in rows:
        subjects.setdefault(row.thread_id, row.subject)
        _add_people(people[row.thread_id], row.sender, row.recipients)
    return [
        ThreadRecord(
            id=group.thread_id,
            grant_id=grant_id,
            subject=subjects.get(group.thread_id),
            messages=int(group.count),
            first_at=aware(group.first_at),
            last_at=aware(group.last_at),
            participants=tuple(people[group.thread_id]),
        )
        for group in groups
    ]


def _thread(grant_id: str, thread_id: str, records: Sequence[MessageRecord]) -> ThreadRecord:
    people: dict[str, None] = {}
    for record in records:
        _add_people(people, record.sender, record.recipients)
    return ThreadRecord(
        id=thread_id,
        grant_id=grant_id,
        subject=records[0].subject,
        messages=len(records),
        first_at=records[0].created_at,
        last_at=records[-1].created_at,
        participants=tuple(people),
    )


def _add_people(people: dict[str, None], sender: str | None, recipients: Any) -> None:
    for address in (sender, *(recipients or ())):
        if address:
            people.setdefault(str(address).lower(), None)
