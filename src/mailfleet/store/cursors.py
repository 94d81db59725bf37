"""Per-grant read positions of inbound sources (an IMAP mailbox's UIDVALIDITY and UID...)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from .tables import cursors_table

__all__ = ["get_cursor", "set_cursor"]


def get_cursor(conn: Connection, grant_id: str, source: str) -> dict[str, Any] | None:
    """The stored position of ``source`` for the grant, if any."""
    value: dict[str, Any] | None = conn.execute(
        sa.select(cursors_table.c.value).where(
            cursors_table.c.grant_id == grant_id, cursors_table.c.source == source
        )
    ).scalar()
    return value


def set_cursor(conn: Connection, grant_id: str, source: str, value: dict[str, Any]) -> None:
    """Store the position of ``source`` for the grant (insert or replace)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(cursors_table).values(grant_id=grant_id, source=source, value=value)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[cursors_table.c.grant_id, cursors_table.c.source],
            set_={"value": statement.excluded.value},
        )
    )
