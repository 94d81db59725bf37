"""The private PostgreSQL fixture itself: it starts, serves, restarts, stops and starts again."""

from __future__ import annotations

import tempfile
from pathlib import Path

import psycopg
import pytest
from privatepg import PrivatePostgres, private_postgres


def _count(url: str) -> int:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM t").fetchone()
        assert row is not None
        return int(row[0])


def test_restart_and_stop_keep_the_data(private_pg: PrivatePostgres) -> None:
    with psycopg.connect(private_pg.url) as conn:
        conn.execute("CREATE TABLE t (n int)")
        conn.execute("INSERT INTO t VALUES (1)")
    private_pg.restart()
    assert _count(private_pg.url) == 1
    private_pg.stop()
    private_pg.wait_down()
    assert not private_pg.is_running()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(private_pg.url, connect_timeout=2)
    private_pg.start()
    assert _count(private_pg.url) == 1
    private_pg.stop(mode="immediate")
    private_pg.start()
    assert _count(private_pg.url) == 1


def test_data_directory_under_a_given_folder() -> None:
    parent = Path(tempfile.mkdtemp(prefix="mailfleet-pgparent-"))
    with private_postgres(parent, settings={"max_connections": "20"}) as server:
        assert (parent / "pgdata" / "PG_VERSION").is_file()
        with psycopg.connect(server.url) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
            assert row == ("20",)
    assert not (parent / "pgdata").exists()
    parent.rmdir()
