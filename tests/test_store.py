"""The store itself: migrations match the models, URLs, API keys kept hashed."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailfleet import Fleet, InvalidInput, StoreUnavailable
from mailfleet.store import applications
from mailfleet.store.database import Database, durability_warnings, normalize_url
from mailfleet.store.migrate import alembic_config, head_revision, migrate_sync
from mailfleet.store.prepared import Prepared
from mailfleet.store.tables import (
    JSONType,
    Timestamp,
    api_keys_table,
    metadata,
    new_id,
    utcnow,
)
from mailfleet.store.timestamps import aware
from support import wait_until

pytestmark = pytest.mark.anyio


def _diff(conn: sa.Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def test_migrations_create_exactly_the_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate_sync(database)
        assert database.read_sync(_diff) == []
        current = database.read_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        assert current == head_revision()
    finally:
        database.close()


def test_migrations_downgrade_and_upgrade_again(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate_sync(database)
        database.write_sync(lambda c: command.downgrade(alembic_config(c), "base"))
        tables = database.read_sync(lambda c: sa.inspect(c).get_table_names())
        assert set(tables) <= {"alembic_version"}
        migrate_sync(database)
        migrate_sync(database)  # idempotent
        assert database.read_sync(_diff) == []
    finally:
        database.close()


def test_urls_map_to_the_shipped_drivers() -> None:
    assert normalize_url("postgres://u@h/db").startswith("postgresql+psycopg://u@h/db")
    assert normalize_url("postgresql://u:pw@h:5/db") == "postgresql+psycopg://u:pw@h:5/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(InvalidInput, match="unsupported database") as caught:
        normalize_url("mysql://u@h/db")
    assert caught.value.field == "database_url"
    with pytest.raises(InvalidInput, match="not a database URL"):
        normalize_url("nonsense")


async def test_an_unreachable_database_is_one_clear_error() -> None:
    url = "postgresql://nobody:secret@127.0.0.1:9/nowhere"
    with pytest.raises(StoreUnavailable) as caught:
        async with Fleet(database_url=url):
            pass
    assert "127.0.0.1:9/nowhere" in str(caught.value)
    assert "secret" not in str(caught.value)


async def test_api_keys_are_stored_hashed_and_scoped(database_url: str) -> None:
    async with (
        Fleet(database_url=database_url, application="one") as one,
        Fleet(database_url=database_url, application="two") as two,
    ):
        key, secret = await one.create_api_key("ci")
        _, other_secret = await two.create_api_key("ci")
        assert secret.startswith("mf_")
        assert len(secret) > 40
        stored = await one.database.read(
            lambda c: [tuple(r) for r in c.execute(sa.select(api_keys_table))]
        )
        assert not any(secret in str(value) for row in stored for value in row)
        found = await one.database.read(lambda c: applications.authenticate(c, secret))
        assert found is not None
        assert found.id == one.application.id == key.application_id
        found = await one.database.read(lambda c: applications.authenticate(c, other_secret))
        assert found is not None
        assert found.id == two.application.id
        assert await one.database.read(lambda c: applications.authenticate(c, "mf_nope")) is None


async def test_applications_are_isolated(database_url: str) -> None:
    async with (
        Fleet(database_url=database_url, application="one") as one,
        Fleet(database_url=database_url, application="two") as two,
    ):
        await one.add_domain("one.example.com")
        await one.provision("a@one.example.com")
        assert await two.count_grants() == 0
        assert await two.domains() == []
        result = (await two.provision_many(["a@one.example.com"]))[0]
        assert not result.ok
        assert "not registered" in (result.reason or "")
        with pytest.raises(Exception, match="another application"):
            await two.add_domain("one.example.com")


async def test_a_closed_fleet_says_so() -> None:
    fleet = Fleet(database_url="sqlite:///:memory:")
    with pytest.raises(RuntimeError, match="not open"):
        _ = fleet.application


def test_prepared_statements_write_what_sqlalchemy_reads(database_url: str) -> None:
    """The hot-path statements bypass SQLAlchemy's execution but not its types or errors."""
    probe = sa.Table(
        "prepared_probe",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("payload", JSONType, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("raw", sa.LargeBinary),
    )
    insert = Prepared(sa.insert(probe), columns=("id", "payload", "at", "raw"))
    lookup = Prepared(sa.select(probe.c.id).where(probe.c.id == sa.bindparam("key")))
    row = {"id": 1, "payload": {"to": ["a@example.org"]}, "at": utcnow(), "raw": b"\x00\xff"}
    # more rows sharing the timestamp object (processed once) but not the payload
    more = [{**row, "id": n, "payload": {"n": n}, "raw": None} for n in (2, 3)]
    database = Database(database_url)
    try:
        database.write_sync(lambda c: probe.create(c))
        database.write_sync(lambda c: insert.execute_many(c, [row, *more]))
        back = database.read_sync(lambda c: c.execute(sa.select(probe).order_by(probe.c.id)).all())
        assert [(b.payload, b.raw) for b in back] == [
            (row["payload"], row["raw"]),
            ({"n": 2}, None),
            ({"n": 3}, None),
        ]
        assert {aware(b.at) for b in back} == {row["at"]}
        assert database.read_sync(lambda c: lookup.fetch(c, {"key": 1})) == [(1,)]
        with pytest.raises(sa.exc.IntegrityError):  # driver errors arrive as SQLAlchemy's
            database.write_sync(lambda c: insert.execute_many(c, [row]))
    finally:
        database.write_sync(lambda c: probe.drop(c, checkfirst=True))
        database.close()


async def test_the_wal_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    """Commits only append to the WAL (the automatic checkpoint is a far-off
    backstop); the checkpointer thread copies the pages into the database file."""
    path = tmp_path / "wal.db"
    database = Database(f"sqlite:///{path}")
    try:
        database.write_sync(lambda c: c.exec_driver_sql("CREATE TABLE blobs (b BLOB)"))
        for _ in range(8):  # 4 MiB, well below the backstop's 64 MiB
            database.write_sync(
                lambda c: c.exec_driver_sql(
                    "INSERT INTO blobs VALUES (?)", [(b"x" * 4096,) for _ in range(128)]
                )
            )
        await wait_until(lambda: path.stat().st_size >= 4 * 1024 * 1024)
    finally:
        await database.aclose()


def test_ids_are_time_ordered_uuids() -> None:
    """new_id makes RFC 9562 version-7 UUIDs: unique, and later ones sort later."""
    first = [new_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_id()
    parsed = [uuid.UUID(i) for i in [*first, later]]
    assert {(u.version, u.variant) for u in parsed} == {(7, uuid.RFC_4122)}
    assert [str(u) for u in parsed] == [*first, later]  # canonical text form
    assert len(set(first)) == 1000
    assert later > max(first)
    assert abs((parsed[-1].int >> 80) - time.time() * 1000) < 5_000  # milliseconds since 1970


def test_sqlite_commits_are_fsynced(tmp_path: Path) -> None:
    """synchronous=FULL: a commit that returned is in the fsynced WAL (survives power loss)."""
    database = Database(f"sqlite:///{tmp_path / 'durable.db'}")
    try:
        level = database.read_sync(lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar())
        assert level == 2  # FULL (NORMAL is 1)
        mode = database.read_sync(lambda conn: conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        assert mode == "wal"
    finally:
        database.close()


def test_durability_warnings_name_what_is_at_risk() -> None:
    assert durability_warnings({"synchronous_commit": "on", "fsync": "on"}) == []
    assert durability_warnings({"synchronous_commit": "local", "fsync": "on"}) == []
    [commit] = durability_warnings({"synchronous_commit": "off", "fsync": "on"})
    assert "synchronous_commit is off" in commit
    assert "acknowledged" in commit
    [fsync] = durability_warnings({"synchronous_commit": "on", "fsync": "off"})
    assert "fsync is off" in fsync


@pytest.mark.postgres
def test_postgres_without_synchronous_commit_warns_at_start(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's own setting, seen by the first connection: one warning, once."""
    for options, warned in (("", False), ("-c synchronous_commit=off", True)):
        url = sa.make_url(postgres_url).update_query_dict({"options": options} if options else {})
        caplog.clear()
        database = Database(url.render_as_string(hide_password=False))
        try:
            with caplog.at_level(logging.WARNING, logger="mailfleet.store"):
                for _ in range(3):  # the pool's first connection checks; later ones do not
                    database.read_sync(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
        finally:
            database.close()
        warnings = [r for r in caplog.records if "synchronous_commit is off" in r.getMessage()]
        assert len(warnings) == (1 if warned else 0), caplog.text
