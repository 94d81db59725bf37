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

Durability: a transaction that returns has committed to disk. SQLite runs with
``synchronous=FULL`` (the WAL is fsynced at every commit, so a commit survives
a power loss, not only a crash of the process); on PostgreSQL the server's
``synchronous_commit`` and ``fsync`` decide, and the first connection warns
when either is off (:func:`durability_warnings`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from ..model.errors import DatabaseNotFound, InvalidInput, StoreUnavailable
from .checkpoint import BACKSTOP_PAGES, Checkpointer

__all__ = ["Database", "display_url", "durability_warnings", "normalize_url", "sqlite_path"]

T = TypeVar("T")

log = logging.getLogger("mailfleet.store")

SQLITE_SYNCHRONOUS = "FULL"
"""SQLite's ``synchronous`` pragma: FULL fsyncs the WAL at every commit, so that an
acknowledgement survives a power loss. (Only the benchmarks lower it, to measure the
fsync's cost; NORMAL survives a crash of the process but not of the machine.)"""

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


def _first_line(exc: sa.exc.DBAPIError) -> str:
    """The first line of the driver's message (psycopg's may span several)."""
    text = (str(exc.orig) if exc.orig is not None else str(exc)).strip()
    return text.splitlines()[0] if text else type(exc.orig or exc).__name__


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
        self._state_lock = threading.Lock()
        self._down_since: float | None = None
        # An outage is logged only once the database has worked: one that never
        # opened is a start-up failure, which the caller reports in one line.
        self._has_worked = False
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
            # No pre-ping: it costs a round trip per transaction. Stale connections
            # are recycled; one found dead (the server restarted) invalidates the
            # whole pool and its transaction runs again once (see _run).
            self.engine = sa.create_engine(
                self.url, pool_size=pool_size, max_overflow=0, pool_recycle=1800
            )
            sa.event.listen(self.engine, "first_connect", self._check_durability)
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
        between attempts. So is one that fails because its pooled connection
        turned out dead (the server restarted since it was last used) before
        its COMMIT was sent: that cannot have committed, and the pool is
        renewed by then. A connection lost *during* COMMIT is ambiguous (the
        server may have committed): it is not run again, but reported as
        :class:`~mailfleet.StoreUnavailable`, so that callers answer "try again
        later" and never "done" for work that may be lost; a caller that tries
        again may repeat work that did commit (at-least-once). A database that
        cannot be reached or used (gone, down, locked for too long, its file
        damaged) raises :class:`~mailfleet.StoreUnavailable` with the driver's
        error chained.
        """
        return self._run(work, write=True)

    def read_sync(self, work: Callable[[Connection], T]) -> T:
        """Blocking form of :meth:`read`; run again once if its pooled connection was dead."""
        return self._run(work, write=False)

    def _run(self, work: Callable[[Connection], T], *, write: bool) -> T:
        attempts = 0
        reconnected = False
        while True:
            committing = False
            try:
                with self.engine.connect() as conn:
                    if write:
                        conn.execution_options(**{_BEGIN: "IMMEDIATE"})
                    with conn.begin():
                        result = work(conn)
                        committing = True
                self._reachable()
                return result
            except sa.exc.DBAPIError as exc:
                attempts += 1
                if write and attempts < _ATTEMPTS and _is_transient(exc):
                    continue
                if exc.connection_invalidated and not committing and not reconnected:
                    # The server closed this connection (a restart, an administrator's
                    # pg_terminate_backend); SQLAlchemy has invalidated the whole pool,
                    # so the next connection is a new one.
                    reconnected = True
                    log.warning(
                        "the connection to the database %s was lost (%s); reconnecting",
                        self.display_url,
                        _first_line(exc),
                    )
                    continue
                if not _is_unavailable(exc):
                    raise
                raise self._unavailable(exc, ambiguous=committing) from exc

    @property
    def display_url(self) -> str:
        """The URL with its password hidden, for messages and logs."""
        return display_url(self.url)

    def _check_durability(self, dbapi_conn: Any, _record: Any) -> None:
        """Warn, once per engine, when the server may lose commits it acknowledged."""
        cursor = dbapi_conn.cursor()
        try:
            settings = {}
            for name in ("synchronous_commit", "fsync"):
                cursor.execute(f"SHOW {name}")
                settings[name] = str(cursor.fetchone()[0])
        finally:
            cursor.close()
            dbapi_conn.rollback()  # SHOW opened a transaction on psycopg's connection
        for warning in durability_warnings(settings):
            log.warning("PostgreSQL at %s: %s", self.display_url, warning)

    def _unavailable(self, exc: sa.exc.DBAPIError, *, ambiguous: bool) -> StoreUnavailable:
        cause = _first_line(exc)
        if ambiguous:
            cause += " (during COMMIT: the transaction may or may not have committed)"
        with self._state_lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        if first and self._has_worked:
            log.warning("the database %s is unavailable: %s", self.display_url, cause)
        return StoreUnavailable(f"the database {self.display_url} is unavailable: {cause}")

    def _reachable(self) -> None:
        """Note a transaction that committed: log the end of an outage once."""
        if self._down_since is None:  # the normal case: one attribute read
            self._has_worked = True
            return
        with self._state_lock:
            since, self._down_since = self._down_since, None
        worked, self._has_worked = self._has_worked, True
        if since is not None and worked:
            log.info(
                "the database %s is reachable again after %.1fs",
                self.display_url,
                time.monotonic() - since,
            )

    @property
    def unavailable_since(self) -> float | None:
        """Monotonic time of the first failure of the outage under way (None: no outage
        seen since the last transaction that committed)."""
        return self._down_since

    async def aclose(self) -> None:
        """Stop the checkpointer and close every pooled connection."""
        await anyio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Blocking form of :meth:`aclose`."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()


def durability_warnings(settings: dict[str, str]) -> list[str]:
    """What PostgreSQL's ``synchronous_commit`` and ``fsync`` settings put at risk.

    mailfleet answers ``250``, ``202`` or ``queued`` once its transaction has
    committed; with ``synchronous_commit=off`` the server acknowledges a commit
    before it is on disk (a crash of the server loses the last ones), with
    ``fsync=off`` a power loss can corrupt the whole database.
    """
    warnings = []
    if settings.get("synchronous_commit", "on").lower() == "off":
        warnings.append(
            "synchronous_commit is off: a crash of the server can lose mail that "
            "mailfleet has already acknowledged (set synchronous_commit = on)"
        )
    if settings.get("fsync", "on").lower() == "off":
        warnings.append(
            "fsync is off: a power loss can lose acknowledged mail and corrupt the "
            "database (set fsync = on)"
        )
    return warnings


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
        cursor.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
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
