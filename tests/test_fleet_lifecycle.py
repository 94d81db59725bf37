"""The Fleet as a context manager and a served component: errors come out as themselves,
settings are validated, a fleet that is not open (or whose database is gone) says so."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy as sa

from mailfleet import (
    DomainNotRegistered,
    Fleet,
    FleetNotOpen,
    InvalidInput,
    MailfleetError,
    Serving,
    StoreUnavailable,
)

pytestmark = pytest.mark.anyio

MAIL = b"From: a@example.org\r\nTo: x@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"


async def test_an_error_in_the_block_comes_out_as_itself(database_url: str) -> None:
    with pytest.raises(DomainNotRegistered) as caught:
        async with Fleet(database_url=database_url) as fleet:
            await fleet.provision("x@nowhere.example")
    assert caught.value.domain == "nowhere.example"
    with pytest.raises(KeyError, match="mine"):  # not an ExceptionGroup around it
        async with Fleet(database_url=database_url) as fleet:
            raise KeyError("mine")


async def test_serve_reports_readiness_and_a_start_failure_as_itself(database_url: str) -> None:
    async with Fleet(database_url=database_url, smtp_port=0, plugins="") as fleet:
        async with anyio.create_task_group() as tg:
            serving = await tg.start(fleet.serve)
            assert isinstance(serving, Serving)
            assert serving.smtp_port
            assert serving.smtp_port == fleet.smtp_port
            assert serving.worker_id == fleet.worker_id
            busy = serving.smtp_port
            async with Fleet(database_url=database_url, smtp_port=busy, plugins="") as other:
                async with anyio.create_task_group() as inner:
                    with anyio.fail_after(5), pytest.raises(OSError, match=str(busy)) as caught:
                        await inner.start(other.serve)
                assert isinstance(caught.value, MailfleetError)
                assert other.worker_id is None  # nothing was left running
            tg.cancel_scope.cancel()
        assert fleet.smtp_port is None


async def test_serve_cancelled_while_it_starts_stops_at_once(database_url: str) -> None:
    """A cancel at any point of start-up (here: after 0 to 40 loop turns) ends serve(),
    the shielded worker included: never a hang."""
    async with Fleet(database_url=database_url, plugins="", shutdown_grace=1) as fleet:
        for turns in range(0, 40, 3):
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(fleet.serve)
                    for _ in range(turns):
                        await anyio.lowlevel.checkpoint()
                    tg.cancel_scope.cancel()
            assert fleet.worker_id is None
        assert (await fleet.statistics()).live_workers == 0


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"relay_pool_size": "many"}, "settings.relay_pool_size"),
        ({"relay_pool_size": 0}, "settings.relay_pool_size"),
        ({"home": 3}, "settings.home"),
        ({"smtp_port": 70000}, "settings.smtp_port"),
        ({"relay_hots": "typo.example"}, "settings.relay_hots"),
    ],
)
def test_bad_keyword_overrides_name_the_setting(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Fleet(**overrides)
    assert caught.value.field == field


def test_keyword_overrides_are_converted_like_the_environment(tmp_path: Path) -> None:
    fleet = Fleet(home=str(tmp_path / "state"), relay_pool_size="3")
    assert fleet.settings.home == tmp_path / "state"
    assert fleet.settings.relay_pool_size == 3


async def test_a_fleet_that_is_not_open_says_so(database_url: str) -> None:
    fleet = Fleet(database_url=database_url)
    calls = [
        lambda: fleet.grants(),
        lambda: fleet.provision("a@example.com"),
        lambda: fleet.deliver("a@example.com", MAIL),
        lambda: fleet.send("a@example.com", "b@example.org", subject="s", text="t"),
        lambda: fleet.serve(),
        lambda: fleet.statistics(),
        lambda: fleet.dead_letters(),
    ]
    for call in calls:
        with pytest.raises(FleetNotOpen, match="async with Fleet"):
            await call()
    with pytest.raises(FleetNotOpen):
        _ = fleet.application
    async with fleet:
        assert await fleet.grants() == []
    for call in calls:  # and after it closed
        with pytest.raises(FleetNotOpen):
            await call()
    assert issubclass(FleetNotOpen, MailfleetError)


@pytest.mark.postgres
async def test_a_database_gone_under_an_open_fleet_is_store_unavailable(
    postgres_server: sa.URL,
) -> None:
    admin = sa.create_engine(postgres_server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    name = f"mailfleet_gone_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = postgres_server.set(database=name).render_as_string(hide_password=False)
    try:
        async with Fleet(database_url=url, application="test") as fleet:
            await fleet.add_domain("example.com")
            grant = await fleet.provision("a@example.com")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
            for call in (
                lambda: fleet.grants(),
                lambda: fleet.deliver(grant, MAIL),
                lambda: fleet.send(grant, "b@example.org", subject="s", text="t"),
                lambda: fleet.provision("b@example.com"),
            ):
                with pytest.raises(StoreUnavailable, match=f"the database .*{name}") as caught:
                    await call()
                assert isinstance(caught.value.__cause__, sa.exc.DBAPIError)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


async def test_a_damaged_sqlite_file_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "mailfleet.db"
    async with Fleet(database_url=f"sqlite:///{path}") as fleet:
        await fleet.add_domain("example.com")
    path.write_bytes(b"this is not a database" * 100)
    (tmp_path / "mailfleet.db-wal").unlink(missing_ok=True)
    with pytest.raises(StoreUnavailable, match=r"cannot open the database .*mailfleet\.db"):
        async with Fleet(database_url=f"sqlite:///{path}"):
            pass
