"""Shared fixtures: the anyio backend, the two real database backends, a DNS server.

Every test that takes ``database_url`` (or ``fleet``) runs twice: against a
SQLite file in its temporary folder and against the real PostgreSQL server
(``MAILFLEET_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``).
The PostgreSQL run gets a database of its own, created at session start and
dropped at the end. Without a reachable server the PostgreSQL variants skip
with the reason, except under CI (``CI=true``), where they fail.

``dns_server`` is an authoritative DNS server on loopback (``tests/dnsserver.py``)
that a test fills with the records it needs.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import pytest
import sqlalchemy as sa
from typer.testing import Result

from apiserver import ApiServer, api_server
from dnsserver import DnsServer
from mailfleet import Fleet
from mailfleet.store.database import normalize_url
from mailfleet.store.tables import metadata
from support import Invoke, create_database

T = TypeVar("T")

POSTGRES_URL = os.environ.get(
    "MAILFLEET_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """aiosmtpd and aiosmtplib are asyncio-only: pin the backend."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's MAILFLEET_* variables or writes to ./.mailfleet."""
    for name in list(os.environ):
        if name.startswith("MAILFLEET_") and name != "MAILFLEET_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("MAILFLEET_HOME", str(tmp_path / "home"))
    # `mailfleet run` in a subprocess serves the HTTP API: on a free port, never 8025.
    monkeypatch.setenv("MAILFLEET_API_PORT", "0")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(normalize_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[sa.URL]:
    """A fresh database on the PostgreSQL server for this test session."""
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc.orig}"
        if ON_CI:
            pytest.fail(f"{reason} (CI must run the PostgreSQL tests)")
        pytest.skip(reason=reason)
    name = f"mailfleet_test_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(normalize_url(POSTGRES_URL)).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _truncate_all(url: sa.URL) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            names = [t.name for t in metadata.sorted_tables]
            present = set(sa.inspect(conn).get_table_names())
            wanted = ", ".join(f'"{n}"' for n in names if n in present)
            if wanted:
                conn.exec_driver_sql(f"TRUNCATE {wanted} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty mailfleet database, on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mailfleet.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def postgres_url(postgres_server: sa.URL) -> str:
    """A URL to an empty mailfleet database on the PostgreSQL server."""
    _truncate_all(postgres_server)
    return postgres_server.render_as_string(hide_password=False)


@pytest.fixture
async def fleet(database_url: str) -> AsyncIterator[Fleet]:
    """An open fleet with ``example.com`` registered."""
    async with Fleet(database_url=database_url, application="test") as opened:
        await opened.add_domain("example.com")
        yield opened


@pytest.fixture
async def api(fleet: Fleet) -> AsyncIterator[ApiServer]:
    """The HTTP API on a loopback port, serving ``fleet``'s store (and an application
    ``other`` on it): ``await api.client()`` is a client with a key of ``fleet``'s."""
    async with api_server(fleet) as server:
        yield server


# -- DNS ---------------------------------------------------------------------------------


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """An authoritative DNS server on 127.0.0.1 (UDP and TCP, ``dns_server.address``), serving
    no zone until the test publishes records (``dns_server.set``)."""
    with DnsServer() as server:
        yield server


# -- the command line ----------------------------------------------------------------------


@pytest.fixture
def mailfleet(database_url: str) -> Invoke:
    """Run ``mailfleet --database-url URL ARGS...``, in-process, on a database that exists."""
    from typer.testing import CliRunner

    from mailfleet.cli import app

    create_database(database_url)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(app, ["--database-url", database_url, *args], input=input, env=env)

    return invoke


@pytest.fixture
def state(database_url: str) -> Callable[[Callable[[Fleet], Awaitable[T]]], T]:
    """Await ``work(fleet)`` on a fleet opened on the database the commands use."""

    def call(work: Callable[[Fleet], Awaitable[T]]) -> T:
        async def session() -> T:
            async with Fleet(database_url=database_url) as fleet:
                return await work(fleet)

        return anyio.run(session)

    return call
