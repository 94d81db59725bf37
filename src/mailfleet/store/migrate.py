"""Schema migrations (Alembic), applied programmatically at start-up.

Several workers may start at once against one PostgreSQL database: the
upgrade runs under an advisory lock so exactly one applies it.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from .database import Database

__all__ = ["alembic_config", "head_revision", "migrate", "migrate_sync"]

_LOCK_KEY = 0x6D61696C666C6565  # "mailflee"
_SCRIPTS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration pointing at mailfleet's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest migration this version of mailfleet ships."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
    current = MigrationContext.configure(conn).get_current_revision()
    if current != head_revision():
        command.upgrade(alembic_config(conn), "head")


def migrate_sync(database: Database) -> None:
    """Bring the schema to the newest revision (blocking)."""
    database.write_sync(_upgrade)


async def migrate(database: Database) -> None:
    """Bring the schema to the newest revision."""
    await database.write(_upgrade)
