"""The event outbox: facts written in the transaction of the change they record."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.records import Event
from .prepared import Prepared
from .scope import Tx
from .tables import events_table, grants_table, utcnow
from .timestamps import aware

__all__ = [
    "count_events",
    "event_counts",
    "latest_position",
    "list_events",
    "positions",
    "record",
    "record_act",
    "record_many",
]

_events = events_table
_grants = grants_table
# inline: no RETURNING of the new ids (PostgreSQL), which nothing reads
_insert = Prepared(
    sa.insert(_events).inline(),
    columns=("application_id", "grant_id", "type", "payload", "created_at"),
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
    type: str | Sequence[str] | None = None,
    grant_id: str | None = None,
    workspace_id: str | None = None,
    upto: int | None = None,
    limit: int = 100,
) -> list[Event]:
    """Events of the application in outbox order, after the id ``after`` (and up to
    ``upto``): of ``type`` (one or several), of the grant ``grant_id``, of the
    workspace ``workspace_id``.

    An event is of a workspace when its payload names it (``workspace.*``,
    ``grant.created``, bounces...) or when its grant is in it now.
    """
    conn = tx.conn
    conditions = _filters(tx, type, grant_id)
    conditions.append(_events.c.id > after)
    if upto is not None:
        conditions.append(_events.c.id <= upto)
    if workspace_id is not None:
        conditions.append(_of_workspace(tx, workspace_id))
    query = sa.select(_events).where(*conditions).order_by(_events.c.id).limit(limit)
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


def event_counts(
    tx: Tx, types: Sequence[str], *, after: int = 0, upto: int | None = None
) -> list[tuple[str, str | None, int]]:
    """How many events of each of ``types`` the application has with ids in
    (``after``, ``upto``], by type and class: ``(type, class, count)``, the class being
    the payload's ``class`` (a bounce's hard/soft) or ``feedback_type`` (a complaint's)."""
    payload = _events.c.payload
    kind = sa.func.coalesce(payload["class"].as_string(), payload["feedback_type"].as_string())
    conditions = [
        _events.c.application_id == tx.application_id,
        _events.c.id > after,
        _events.c.type.in_(list(types)),
    ]
    if upto is not None:
        conditions.append(_events.c.id <= upto)
    query = (
        sa.select(_events.c.type, kind.label("kind"), sa.func.count())
        .where(*conditions)
        .group_by(_events.c.type, kind)
    )
    return [(row[0], row[1], int(row[2])) for row in tx.conn.execute(query)]


def positions(conn: Connection, *, after: int, limit: int) -> list[tuple[int, str]]:
    """The ids of the events of every application visible after the id ``after``, in
    order, each with its application's id (``limit`` at most).

    The one read of the outbox across applications, and it reads positions only,
    never an event: the event stream uses it to know how far the log is settled
    (:class:`mailfleet.model.frontier.Frontier`), which no single application's
    rows can tell, since the ids are shared.
    """
    query = (
        sa.select(_events.c.id, _events.c.application_id)
        .where(_events.c.id > after)
        .order_by(_events.c.id)
        .limit(limit)
    )
    return [(int(row[0]), str(row[1])) for row in conn.execute(query)]


def latest_position(conn: Connection) -> int:
    """The highest event id visible now, of any application (0 for an empty log)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(_events.c.id), 0))).scalar_one())


def _of_workspace(tx: Tx, workspace_id: str) -> sa.ColumnElement[bool]:
    in_it = sa.select(_grants.c.id).where(
        _grants.c.application_id == tx.application_id, _grants.c.workspace_id == workspace_id
    )
    return sa.or_(
        _events.c.payload["workspace_id"].as_string() == workspace_id,
        _events.c.grant_id.in_(in_it),
    )


def _filters(
    tx: Tx, type: str | Sequence[str] | None, grant_id: str | None
) -> list[sa.ColumnElement[bool]]:
    conditions = [_events.c.application_id == tx.application_id]
    if isinstance(type, str):
        conditions.append(_events.c.type == type)
    elif type is not None:
        conditions.append(_events.c.type.in_(list(type)))
    if grant_id is not None:
        conditions.append(_events.c.grant_id == grant_id)
    return conditions
