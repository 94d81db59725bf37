"""Helpers shared by the benchmarks: scratch databases, timing, the JSON last line.

Each benchmark runs against a fresh SQLite file in a temporary directory and a
fresh PostgreSQL database named ``mailfleet_bench_<random>`` that is dropped
afterwards. The server is taken from ``MAILFLEET_BENCH_POSTGRES`` (default:
``postgresql://postgres@127.0.0.1:5432/test``, the maintenance database used
to create and drop the scratch ones).
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

# Run from the repository root without installing: make ``src/`` importable.
_SRC = Path(__file__).resolve().parent.parent / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

__all__ = [
    "BACKENDS",
    "UNPACED",
    "emit",
    "median",
    "percentile",
    "scratch_database",
    "stopwatch",
]

BACKENDS = ("sqlite", "postgres")

POSTGRES_SERVER = os.environ.get(
    "MAILFLEET_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)

UNPACED = {
    "breaker": {"enabled": False},
    "warmup": {"grant": [], "domain": []},
    "send_rate_per_minute": 10_000_000,
    "send_burst": 1_000_000,
    "daily_send_quota": 100_000_000,
    "send_queue_limit": 1_000_000,
}
"""A policy that neither paces, ramps nor holds back what a benchmark sends."""


@contextmanager
def scratch_database(backend: str) -> Iterator[str]:
    """A fresh, empty database of ``backend``; yields its SQLAlchemy-style URL.

    The URL is ``sqlite:///...`` or ``postgresql://...``; callers pick the
    driver (``postgresql+psycopg_async`` ...) themselves when they need one.
    """
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="mailfleet-bench-") as folder:
            yield f"sqlite:///{folder}/bench.db"
    elif backend == "postgres":
        with _postgres_scratch() as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")


@contextmanager
def _postgres_scratch() -> Iterator[str]:
    name = f"mailfleet_bench_{secrets.token_hex(4)}"
    server = make_url(POSTGRES_SERVER)
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def stopwatch() -> Iterator[Callable[[], float]]:
    """Time a block: ``with stopwatch() as elapsed: ...; elapsed()`` gives seconds."""
    start = time.perf_counter()
    end: float | None = None

    def elapsed() -> float:
        return (end if end is not None else time.perf_counter()) - start

    try:
        yield elapsed
    finally:
        end = time.perf_counter()


def median(values: list[float]) -> float:
    """The median of ``values``."""
    return statistics.median(values)


def percentile(values: Sequence[float], share: float) -> float:
    """The ``share`` percentile (0.99...) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def emit(figures: dict[str, Any]) -> None:
    """Print the figures as the benchmark's last line: one JSON object."""
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    print(json.dumps(rounded), flush=True)
