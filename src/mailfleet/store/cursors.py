"""Per-grant read positions of inbound sources (an IMAP mailbox's UIDVALIDITY and UID...)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..model.errors import GrantNotFound
from .dialect import insert
from .scope import Tx
from .tables import cursors_table, grants_table

__all__ = ["get_cursor", "set_cursor"]

_cursors = cursors_table
_grants = grants_table


def _owned(tx: Tx, grant_id: str) -> sa.ColumnElement[bool]:
    """The grant is the application's: a cursor of another tenant is never read or written."""
    return sa.exists().where(
        _grants.c.id == grant_id, _grants.c.application_id == tx.application_id
    )


def get_cursor(tx: Tx, grant_id: str, source: str) -> dict[str, Any] | None:
    """The stored position of ``source`` for the grant, if any."""
    value: dict[str, Any] | None = tx.conn.execute(
        sa.select(_cursors.c.value).where(
            _cursors.c.grant_id == grant_id, _cursors.c.source == source, _owned(tx, grant_id)
        )
    ).scalar()
    return value


def set_cursor(tx: Tx, grant_id: str, source: str, value: dict[str, Any]) -> None:
    """Store the position of ``source`` for the grant (insert or replace).

    Raises :class:`~mailfleet.GrantNotFound` if the grant is not the application's.
    """
    conn = tx.conn
    if not conn.execute(sa.select(_owned(tx, grant_id))).scalar():
        raise GrantNotFound(grant_id)
    statement = insert(conn, _cursors).values(grant_id=grant_id, source=source, value=value)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[_cursors.c.grant_id, _cursors.c.source],
            set_={"value": statement.excluded.value},
        )
    )
