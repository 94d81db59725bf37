"""Stored messages outside the inbound queue path: the outbox of outbound mail."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.messages import parse_headers
from .events import record
from .tables import messages_table, new_id, utcnow

__all__ = ["count_messages", "store_outbound"]


def store_outbound(
    conn: Connection,
    application_id: str,
    grant_id: str,
    raw: bytes,
    *,
    recipients: Sequence[str],
    thread_id: str | None = None,
    thread_subject: str | None = None,
) -> str:
    """Put a built message into the grant's outbox; return its stored id."""
    headers = parse_headers(raw)
    message_id = new_id()
    conn.execute(
        sa.insert(messages_table),
        {
            "id": message_id,
            "application_id": application_id,
            "grant_id": grant_id,
            "direction": "out",
            "folder": "sent",
            "message_id": headers.message_id,
            "thread_id": thread_id or new_id(),
            "thread_subject": (thread_subject or "")[:255] or None,
            "subject": headers.subject,
            "sender": headers.sender,
            "recipients": list(recipients),
            "size": len(raw),
            "headers": [list(h) for h in headers.headers],
            "raw": raw,
            "created_at": utcnow(),
        },
    )
    record(
        conn,
        application_id,
        "message.queued",
        {
            "grant_id": grant_id,
            "message_id": message_id,
            "header_message_id": headers.message_id,
            "to": list(recipients),
            "subject": headers.subject,
            "thread_id": thread_id,
        },
        grant_id=grant_id,
    )
    return message_id


def count_messages(conn: Connection, grant_id: str, *, folder: str | None = None) -> int:
    """How many stored messages a grant has (in one folder)."""
    query = sa.select(sa.func.count()).where(messages_table.c.grant_id == grant_id)
    if folder is not None:
        query = query.where(messages_table.c.folder == folder)
    return int(conn.execute(query).scalar_one())
