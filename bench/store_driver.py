"""Sync driver in a worker thread (mailfleet's ``Database``) against SQLAlchemy's async engine.

mailfleet runs every transaction as a synchronous SQLAlchemy function in a
worker thread (``Database.write``: one thread hop per transaction). This
benchmark weighs that choice against the async drivers, on SQLite and on
PostgreSQL, for two workloads on a scratch table ``bench_rows(id, payload)``:

* ``tx``: 2,000 single-row write transactions issued by 20 concurrent asyncio
  tasks (100 each); figure: transactions/s (= rows/s).
* ``bulk``: one transaction inserting 10,000 rows in executemany batches of
  1,000; figure: rows/s.

Approaches:

* ``thread``: ``mailfleet.store.database.Database`` (pysqlite in WAL mode with
  ``BEGIN IMMEDIATE`` and one writer per process; psycopg 3 sync with a pool of
  8 and pre-ping), via ``anyio.to_thread.run_sync``.
* ``async``: ``create_async_engine`` with aiosqlite (same pragmas, same
  ``BEGIN IMMEDIATE``, same single writer) or ``postgresql+psycopg_async``
  (same pool of 8 with pre-ping).
* ``asyncpg``: ``postgresql+asyncpg``, same pool settings, when installed.

Each figure is the median of a few rounds; rounds interleave the approaches
so that drift in the machine's load hits them alike. Ratios are thread/async:
above 1 means the worker thread is faster.

Usage (from the repository root)::

    .venv/bin/python bench/store_driver.py

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import anyio
import sqlalchemy as sa
from _common import BACKENDS, emit, median, scratch_database, stopwatch
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from mailfleet.store.database import SQLITE_SYNCHRONOUS, Database, normalize_url

SMALL_TX = 2_000
TASKS = 20
BULK_ROWS = 10_000
BATCH = 1_000
ROUNDS = 5
POOL_SIZE = 8  # mailfleet's default PostgreSQL pool
PAYLOAD = "x" * 100

metadata = sa.MetaData()
bench_rows = sa.Table(
    "bench_rows",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
)
INSERT = sa.insert(bench_rows)

Batches = list[list[dict[str, str]]]


def rows(prefix: str, count: int) -> list[dict[str, str]]:
    return [{"id": f"{prefix}-{n}", "payload": PAYLOAD} for n in range(count)]


def parameters(batch: list[dict[str, str]]) -> dict[str, str] | list[dict[str, str]]:
    """One row as a plain execute, several as an executemany."""
    return batch[0] if len(batch) == 1 else batch


# -- the approaches -------------------------------------------------------------------


class Approach(Protocol):
    name: str

    async def transaction(self, batches: Batches) -> None:
        """Insert ``batches`` (one statement each) in one write transaction."""

    async def aclose(self) -> None: ...


def _insert_sync(conn: Connection, batches: Batches) -> None:
    for batch in batches:
        conn.execute(INSERT, parameters(batch))


class ThreadApproach:
    """mailfleet's own ``Database``: a sync engine, one worker-thread hop per transaction."""

    name = "thread"

    def __init__(self, url: str) -> None:
        self.database = Database(url, pool_size=POOL_SIZE)

    async def transaction(self, batches: Batches) -> None:
        await self.database.write(partial(_insert_sync, batches=batches))

    async def aclose(self) -> None:
        await self.database.aclose()


class AsyncApproach:
    """SQLAlchemy's async engine, configured like ``Database`` for the same backend."""

    def __init__(self, name: str, url: str, driver: str) -> None:
        self.name = name
        async_url = make_url(url).set(drivername=driver)
        if async_url.get_backend_name() == "sqlite":
            self.engine = create_async_engine(async_url)
            _configure_sqlite(self.engine)
            self.limiter = anyio.CapacityLimiter(1)  # one writer, as in Database
        else:
            self.engine = create_async_engine(
                async_url, pool_size=POOL_SIZE, max_overflow=0, pool_pre_ping=True
            )
            self.limiter = anyio.CapacityLimiter(POOL_SIZE)

    async def transaction(self, batches: Batches) -> None:
        async with self.limiter, self.engine.begin() as conn:
            for batch in batches:
                await conn.execute(INSERT, parameters(batch))

    async def aclose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    """The pragmas and ``BEGIN IMMEDIATE`` that ``Database`` uses for SQLite writes."""

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",
            f"synchronous={SQLITE_SYNCHRONOUS}",
            "foreign_keys=ON",
            "busy_timeout=30000",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def approaches(backend: str, url: str) -> list[Approach]:
    """Every approach available for ``backend``, the thread baseline first."""
    found: list[Approach] = [ThreadApproach(url)]
    if backend == "sqlite":
        found.append(AsyncApproach("async", url, "sqlite+aiosqlite"))
    else:
        found.append(AsyncApproach("async", url, "postgresql+psycopg_async"))
        if importlib.util.find_spec("asyncpg") is not None:
            found.append(AsyncApproach("asyncpg", url, "postgresql+asyncpg"))
        else:
            print("[postgres] asyncpg is not installed: skipped")
    return found


# -- the workloads ----------------------------------------------------------------------


async def small_transactions(approach: Approach, prefix: str) -> float:
    """``SMALL_TX`` one-row transactions from ``TASKS`` tasks; returns transactions/s."""
    per_task = SMALL_TX // TASKS

    async def task(number: int) -> None:
        for row in rows(f"{prefix}-{number}", per_task):
            await approach.transaction([[row]])

    with stopwatch() as elapsed:
        async with anyio.create_task_group() as group:
            for number in range(TASKS):
                group.start_soon(task, number)
    return per_task * TASKS / elapsed()


async def bulk_transaction(approach: Approach, prefix: str) -> float:
    """One transaction of ``BULK_ROWS`` rows in batches of ``BATCH``; returns rows/s."""
    data = rows(prefix, BULK_ROWS)
    batches = [data[start : start + BATCH] for start in range(0, BULK_ROWS, BATCH)]
    with stopwatch() as elapsed:
        await approach.transaction(batches)
    return BULK_ROWS / elapsed()


@dataclass(frozen=True)
class Workload:
    key: str  # the figure's name after "<backend>_<approach>_"
    label: str
    unit: str
    run: Callable[[Approach, str], Awaitable[float]]


WORKLOADS = (
    Workload("tx_per_s", f"{SMALL_TX:,} one-row tx from {TASKS} tasks", "tx/s", small_transactions),
    Workload(
        "bulk_rows_per_s",
        f"{BULK_ROWS:,} rows in one tx, batches of {BATCH:,}",
        "rows/s",
        bulk_transaction,
    ),
)


# -- running ---------------------------------------------------------------------------------


class ScratchTable:
    """``bench_rows`` in the scratch database: created once, emptied before each measurement."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(normalize_url(url), poolclass=NullPool)
        metadata.create_all(self.engine)
        self.empty_sql = (
            "DELETE FROM bench_rows"
            if self.engine.dialect.name == "sqlite"
            else "TRUNCATE bench_rows"
        )

    def empty(self) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self.empty_sql)
        if self.engine.dialect.name == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


async def measure_backend(backend: str) -> dict[str, float]:
    """Figures ``<backend>_<approach>_<workload>`` (medians of ``ROUNDS``)."""
    samples: dict[str, list[float]] = {}
    with scratch_database(backend) as url:
        table = ScratchTable(url)
        contenders = approaches(backend, url)
        try:
            for approach in contenders:  # open connections, warm caches: not timed
                await approach.transaction([rows(f"warm-{approach.name}", 1)])
            for round_ in range(ROUNDS):
                for workload in WORKLOADS:
                    for approach in contenders:
                        await anyio.to_thread.run_sync(table.empty)
                        value = await workload.run(approach, f"r{round_}")
                        key = f"{backend}_{approach.name}_{workload.key}"
                        samples.setdefault(key, []).append(value)
                        print(
                            f"[{backend}] round {round_ + 1}/{ROUNDS} {approach.name:>7}: "
                            f"{workload.label}: {value:,.0f} {workload.unit}"
                        )
        finally:
            for approach in contenders:
                await approach.aclose()
            table.engine.dispose()
    return {key: median(values) for key, values in samples.items()}


def ratios(backend: str, figures: dict[str, float]) -> dict[str, float]:
    """thread/async for every async approach and workload that was measured."""
    found = {}
    for workload in WORKLOADS:
        short = workload.key.split("_")[0]  # "tx" or "bulk"
        baseline = figures[f"{backend}_thread_{workload.key}"]
        for name in ("async", "asyncpg"):
            other = figures.get(f"{backend}_{name}_{workload.key}")
            if other is not None:
                infix = "" if name == "async" else f"{name}_"
                found[f"{backend}_{infix}{short}_ratio"] = baseline / other
    return found


def summary(backend: str, figures: dict[str, float], found: dict[str, float]) -> None:
    for workload in WORKLOADS:
        short = workload.key.split("_")[0]
        parts = [
            f"{name} {figures[key]:,.0f}"
            for name in ("thread", "async", "asyncpg")
            if (key := f"{backend}_{name}_{workload.key}") in figures
        ]
        ratio_parts = [
            f"{k.removeprefix(backend + '_')} {v:.2f}"
            for k, v in found.items()
            if k.endswith(f"{short}_ratio")
        ]
        print(
            f"[{backend}] {workload.label} ({workload.unit}, median): {', '.join(parts)}; "
            f"thread/async: {', '.join(ratio_parts)}"
        )


async def main() -> None:
    figures: dict[str, float] = {}
    for backend in BACKENDS:
        measured = await measure_backend(backend)
        found = ratios(backend, measured)
        summary(backend, measured, found)
        figures.update(measured)
        figures.update(found)
    emit(figures)


if __name__ == "__main__":
    asyncio.run(main())
