"""The event outbox: facts written in the transaction of the change they record."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from ..model.records import Event
from .prepared import Prepared
from .scope import Tx
from .tables import events_table, utcnow
from .timestamps import aware

__all__ = ["count_events", "list_events", "record", "record_act", "record_many"]

_events = events_table
_insert = Prepared(
    sa.insert(_events), columns=("application_id", "grant_id", "type", "payload", "created_at")
)


def record(
    tx: Tx,
    type: str,
    payload: dict[str, Any],
    *,
    grant_id: str | None = None,
) -> None:
    """Append one event to the outbox in the caller's transaction."""
    record_many(tx, type, [(grant_id, payload)])


def record_act(
    tx: Tx, kind: str, subject: str, act: str, *, reason: str, by: str, **extra: Any
) -> None:
    """The event of an operator's act on a grant, workspace, domain or the application:
    ``<kind>.<act>`` (``grant.reinstated``, ``workspace.restricted``...) with who and why."""
    grant_id = subject if kind == "grant" else None
    payload: dict[str, Any] = {"kind": kind, "subject": subject, "reason": reason, "by": by}
    payload.update(extra)
    if grant_id is not None:
        payload["grant_id"] = grant_id
    record_many(tx, f"{kind}.{act}", [(grant_id, payload)])


def record_many(
    tx: Tx,
    type: str,
    items: Iterable[tuple[str | None, dict[str, Any]]],
) -> None:
    """Append one event of ``type`` per ``(grant_id, payload)`` in one statement."""
    conn = tx.conn
    now = utcnow()
    rows = [
        {
            "application_id": tx.application_id,
            "grant_id": grant_id,
            "type": type,
            "payload": payload,
            "created_at": now,
        }
        for grant_id, payload in items
    ]
    _insert.execute_many(conn, rows)


def list_events(
    tx: Tx,
    *,
    after: int = 0,
    type: str | None = None,
    grant_id: str | None = None,
    limit: int = 100,
) -> list[Event]:
    """Events of the application in outbox order, after the id ``after``."""
    conn = tx.conn
    query = (
        sa.select(_events)
        .where(_events.c.id > after, *_filters(tx, type, grant_id))
        .order_by(_events.c.id)
        .limit(limit)
    )
    return [
        Event(
            id=row.id,
            application_id=row.application_id,
            grant_id=row.grant_id,
            type=row.type,
            payload=row.payload,
            created_at=aware(row.created_at),
        )
        for row in conn.execute(query)
    ]


def count_events(tx: Tx, *, type: str | None = None, grant_id: str | None = None) -> int:
    """How many events of the application there are (of ``type``, of ``grant_id``)."""
    query = sa.select(sa.func.count()).where(*_filters(tx, type, grant_id))
    return int(tx.conn.execute(query).scalar_one())


def _filters(tx: Tx, type: str | None, grant_id: str | None) -> list[sa.ColumnElement[bool]]:
    conditions = [_events.c.application_id == tx.application_id]
    if type is not None:
        conditions.append(_events.c.type == type)
    if grant_id is not None:
        conditions.append(_events.c.grant_id == grant_id)
    return conditions
