"""The database handle: one engine, transactions run off the event loop.

Every unit of work is a plain synchronous function of a SQLAlchemy
``Connection``; :meth:`Database.write` and :meth:`Database.read` run it in a
worker thread inside one transaction, so the event loop never blocks on the
database and a whole transaction costs one thread hop (docs/ARCHITECTURE.md
records why this beat the async drivers here).

SQLite (the default) runs in WAL mode; its write transactions start with
``BEGIN IMMEDIATE`` so that concurrent writers, even in other processes, wait
for each other instead of failing, and the WAL is checkpointed in the
background (:mod:`mailfleet.store.checkpoint`). PostgreSQL is reached with psycopg 3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from ..model.errors import DatabaseNotFound, InvalidInput, StoreUnavailable
from .checkpoint import BACKSTOP_PAGES, Checkpointer

__all__ = ["Database", "display_url", "normalize_url", "sqlite_path"]

T = TypeVar("T")

_BEGIN = "mailfleet_begin"
_ATTEMPTS = 3
# SQLSTATE of errors after which the same transaction may simply run again.
_TRANSIENT = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def _is_transient(exc: sa.exc.DBAPIError) -> bool:
    return isinstance(exc, sa.exc.OperationalError) and (
        getattr(exc.orig, "sqlstate", None) in _TRANSIENT
    )


def _is_unavailable(exc: sa.exc.DBAPIError) -> bool:
    """Whether the database, not the query, is at fault: unreachable, gone, shut down,
    locked past the busy timeout, out of space, not a database file. Constraint
    violations and programming errors are not (they propagate as they are)."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return type(exc) is sa.exc.DatabaseError  # e.g. "file is not a database"


def display_url(url: str) -> str:
    """``url`` with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:  # not a URL: show it only if it cannot hold a password
        return url if "@" not in url else "(a database URL that cannot be parsed)"


def normalize_url(url: str) -> str:
    """Map user-facing URLs onto the drivers mailfleet ships with.

    ``postgres://`` and ``postgresql://`` use psycopg 3; a relative SQLite path
    is kept relative to the working directory. Anything else is an
    :class:`~mailfleet.InvalidInput` naming ``database_url``.
    """
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError:
        raise InvalidInput("database_url", f"{url!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend in {"postgres", "postgresql"}:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend != "sqlite":
        raise InvalidInput(
            "database_url",
            f"unsupported database {parsed!r}: use sqlite:///PATH or postgresql://USER@HOST/DB",
        )
    return url


class Database:
    """An engine plus the rules for running transactions off the event loop."""

    def __init__(self, url: str, *, pool_size: int = 8, create: bool = True) -> None:
        """``create=False``: a SQLite file that does not exist is a
        :class:`~mailfleet.DatabaseNotFound`, and neither it nor its folder is made."""
        self.url = normalize_url(url)
        self.dialect = make_url(self.url).get_backend_name()
        self._checkpointer: Checkpointer | None = None
        if self.is_sqlite:
            path = sqlite_path(self.url)
            if path is not None and not create and not path.is_file():
                raise DatabaseNotFound(self.display_url, path=str(path.resolve()))
            self.engine = _sqlite_engine(self.url)
            if path is not None:
                self._checkpointer = Checkpointer(str(path))
                self._checkpointer.start()
            # One writer per process; readers run side by side thanks to WAL.
            self._write_limiter = anyio.CapacityLimiter(1)
            self._read_limiter = anyio.CapacityLimiter(4)
        else:
            # No pre-ping: it costs a round trip per transaction; stale
            # connections are recycled instead.
            self.engine = sa.create_engine(
                self.url, pool_size=pool_size, max_overflow=0, pool_recycle=1800
            )
            self._write_limiter = self._read_limiter = anyio.CapacityLimiter(pool_size)

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite backend."""
        return self.dialect == "sqlite"

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in one read-write transaction; commit if it returns."""
        return await anyio.to_thread.run_sync(self.write_sync, work, limiter=self._write_limiter)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` in one read-only transaction."""
        return await anyio.to_thread.run_sync(self.read_sync, work, limiter=self._read_limiter)

    def write_sync(self, work: Callable[[Connection], T]) -> T:
        """Blocking form of :meth:`write`, for threads and set-up code.

        A transaction PostgreSQL aborts as a deadlock victim or serialization
        failure is run again, up to three times: ``work`` must not keep state
        between attempts. A database that cannot be reached or used (gone,
        down, locked for too long, its file damaged) raises
        :class:`~mailfleet.StoreUnavailable` with the driver's error chained.
        """
        for attempt in range(_ATTEMPTS):
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(**{_BEGIN: "IMMEDIATE"})
                    with conn.begin():
                        return work(conn)
            except sa.exc.DBAPIError as exc:
                if attempt + 1 < _ATTEMPTS and _is_transient(exc):
                    continue
                if not _is_unavailable(exc):
                    raise
                raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")

    def read_sync(self, work: Callable[[Connection], T]) -> T:
        """Blocking form of :meth:`read`."""
        try:
            with self.engine.connect() as conn, conn.begin():
                return work(conn)
        except sa.exc.DBAPIError as exc:
            if not _is_unavailable(exc):
                raise
            raise self._unavailable(exc) from exc

    @property
    def display_url(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return display_url(self.url)

    def _unavailable(self, exc: sa.exc.DBAPIError) -> StoreUnavailable:
        cause = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        return StoreUnavailable(f"the database {self.display_url} is unavailable: {cause}")

    async def aclose(self) -> None:
        """Stop the checkpointer and close every pooled connection."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory database or another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    return Path(database).expanduser() if database and database != ":memory:" else None


PAGE_CACHE_KIB = 4096
"""SQLite's page cache per connection, in KiB (SQLite's default is 2 MiB).

The hot pages of the durable path (the interior pages of the indexes it
writes) fit. In WAL mode a connection drops its whole cache when another
one wrote since its last transaction, so a larger cache serves mostly the
connection of the last write, and grows the process's resident set with
the database up to the bound of every pooled connection: at 64 MiB, the
soak (``bench/soak.py``) measured 35 MiB more in two minutes; at 8 MiB
SQLite's own heap still rose to 31 MiB in four.
"""


def _sqlite_engine(url: str) -> Engine:
    path = sqlite_path(url)
    options: dict[str, Any] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # LIFO: a transaction takes the connection used last, whose page cache is
        # current (a connection left idle re-reads every page written since).
        options["pool_use_lifo"] = True
    engine = sa.create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, **options
    )

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # A page cache of PAGE_CACHE_KIB per connection: see there.
        cursor.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
        # Checkpoints run in the background (store/checkpoint.py); this is the backstop.
        cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
