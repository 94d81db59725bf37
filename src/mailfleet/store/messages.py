"""Stored messages: counts per grant and folder."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .tables import messages_table

__all__ = ["count_messages"]


def count_messages(conn: Connection, grant_id: str, *, folder: str | None = None) -> int:
    """How many stored messages a grant has (in one folder)."""
    query = sa.select(sa.func.count()).where(messages_table.c.grant_id == grant_id)
    if folder is not None:
        query = query.where(messages_table.c.folder == folder)
    return int(conn.execute(query).scalar_one())
