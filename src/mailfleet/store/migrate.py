"""Schema migrations (Alembic), applied programmatically at start-up.

Opening a database first reads its revision with one cheap query; Alembic
is imported and run only when the schema is not at :data:`SCHEMA_REVISION`
(a new database, or an upgrade), so a fleet opened on a current database
pays nothing for it. Several workers may start at once against one
PostgreSQL database: the upgrade runs under an advisory lock so exactly one
applies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.errors import DatabaseNotFound
from .database import Database

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SCHEMA_REVISION",
    "alembic_config",
    "current_revision",
    "head_revision",
    "migrate",
    "migrate_sync",
]

SCHEMA_REVISION = "0016"
"""The newest migration this version ships (a test checks it against the scripts)."""

_LOCK_KEY = 0x6D61696C666C6565  # "mailflee"
_SCRIPTS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration pointing at mailfleet's migration scripts."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration among the scripts, as Alembic reads them."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The revision the database is at; None when it has no mailfleet schema."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    found: str | None = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    return found


def _upgrade(conn: Connection, *, create: bool, url: str) -> bool:
    current = current_revision(conn)
    if current == SCHEMA_REVISION:
        return False
    if current is None and not create:
        raise DatabaseNotFound(url)
    from alembic import command

    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
        current = current_revision(conn)  # another process may have migrated meanwhile
    command.upgrade(alembic_config(conn), "head")
    return current is None


def migrate_sync(database: Database, *, create: bool = True) -> bool:
    """Bring the schema to the newest revision (blocking); see :func:`migrate`."""
    return database.write_sync(lambda conn: _upgrade(conn, create=create, url=database.display_url))


async def migrate(database: Database, *, create: bool = True) -> bool:
    """Bring the schema to the newest revision; return whether it was created.

    An older schema is upgraded. A database without mailfleet's schema gets
    it, unless ``create`` is false: then it is left untouched and
    :class:`~mailfleet.DatabaseNotFound` is raised.
    """
    return await database.write(
        lambda conn: _upgrade(conn, create=create, url=database.display_url)
    )
