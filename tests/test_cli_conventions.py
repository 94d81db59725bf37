"""The conventions every ``mailfleet`` command keeps (see the CLI's module docstring).

Which database a command uses (``--verbose``) and that only the set-up
commands create one; exit codes; lists that page (``--limit``, ``--after``,
a footer on stderr); ``--json`` on every list and show command; tables that
fit the terminal; logs on stderr at the command's level; DNS records split as
DNS needs them; and a start-up that imports only what the command uses.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer.main
from typer.testing import CliRunner, Result

from mailfleet import DatabaseNotFound, Fleet, NotFound
from mailfleet.cli import app
from mailfleet.model.records import DnsRecord, txt_strings
from mailfleet.store.database import normalize_url
from mailfleet.store.migrate import SCHEMA_REVISION, head_revision
from support import Invoke, create_database, ok, one_error_line

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """``mailfleet ARGS...`` in-process, with the test's environment (MAILFLEET_HOME...)."""
    return CliRunner().invoke(app, list(args), env=env)


def json_of(result: Result) -> Any:
    return json.loads(ok(result))


def footer(result: Result) -> str | None:
    """The paging footer a list printed on stderr, if any."""
    lines = [line for line in result.stderr.splitlines() if line.startswith("showing ")]
    return lines[0] if lines else None


# -- which database, and creating one --------------------------------------------------------

READING = [
    ("grants", "list"),
    ("grants", "list", "--unserved"),
    ("grants", "show", "a@example.com"),
    ("grants", "deprovision", "a@example.com"),
    ("events",),
    ("status",),
    ("domains", "list"),
    ("domains", "records", "example.com"),
    ("domains", "check", "example.com"),
    ("workspaces", "list"),
    ("workspaces", "regroup"),
    ("export",),
    ("workspaces", "set-policy", "default", "send_burst=2"),
    ("outbox", "list"),
    ("outbox", "show", "1"),
    ("dead-letters", "list"),
    ("dead-letters", "replay"),
]


@pytest.mark.parametrize("args", READING, ids=" ".join)
def test_a_reading_command_creates_no_database(args: tuple[str, ...], tmp_path: Path) -> None:
    home = tmp_path / "home"  # MAILFLEET_HOME, which does not exist
    line = one_error_line(cli(*args))
    assert line == (
        f"error: database_url: no mailfleet database at {home / 'mailfleet.db'} "
        f"(MAILFLEET_HOME is {home}); nothing was created. Choose the database with "
        "--database-url, MAILFLEET_DATABASE_URL or MAILFLEET_HOME, or create one with a "
        "set-up command (mailfleet domains add DOMAIN)"
    )
    assert not home.exists()  # not even the folder


def test_the_default_database_is_named_by_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAILFLEET_HOME")
    monkeypatch.chdir(tmp_path)
    line = one_error_line(cli("grants", "list"))
    assert f"no mailfleet database at {tmp_path / '.mailfleet' / 'mailfleet.db'} " in line
    assert "(the default: .mailfleet/ in the working directory)" in line
    assert not (tmp_path / ".mailfleet").exists()

    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    from_env = one_error_line(cli("grants", "list", env={"MAILFLEET_DATABASE_URL": url}))
    assert "(from MAILFLEET_DATABASE_URL)" in from_env
    from_option = one_error_line(cli("--database-url", url, "events"))
    assert f"at {tmp_path / 'elsewhere.db'} (from --database-url)" in from_option


def test_set_up_commands_create_the_database_and_say_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    created = cli("domains", "add", "example.com")
    ok(created)
    assert created.stderr.splitlines() == [
        f"created a new database: sqlite:///{home / 'mailfleet.db'}"
    ]
    again = cli("workspaces", "create", "outreach")
    ok(again)
    assert again.stderr == ""
    assert "outreach" in ok(cli("workspaces", "list"))


def test_a_reading_command_for_an_unknown_application_creates_none(tmp_path: Path) -> None:
    ok(cli("domains", "add", "example.com"))
    ok(cli("--application", "alpha", "domains", "add", "alpha.example"))
    line = one_error_line(cli("--application", "alhpa", "grants", "list"))
    assert line == (
        "error: application: no application 'alhpa' in this database (applications: alpha, default)"
    )
    one_error_line(cli("--application", "alhpa", "status"))
    # nothing was made: the set-up command still creates it, and says nothing else
    ok(cli("--application", "alhpa", "domains", "add", "alhpa.example"))
    assert "alhpa.example" in ok(cli("--application", "alhpa", "domains", "list"))


def test_verbose_names_the_database_and_masks_its_password(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(cli("domains", "add", "example.com"))
    listed = cli("--verbose", "domains", "list")
    assert "example.com" in ok(listed)
    assert listed.stderr.splitlines() == [
        f"database: sqlite:///{home / 'mailfleet.db'} (MAILFLEET_HOME is {home})"
    ]

    url = "postgresql://nobody:secret@127.0.0.1:9/nowhere"
    failed = cli("-v", "--database-url", url, "status")
    assert failed.exit_code == 1
    shown, error = failed.stderr.splitlines()
    assert shown == "database: postgresql://nobody:***@127.0.0.1:9/nowhere (from --database-url)"
    assert error.startswith("error: cannot open the database postgresql+psycopg://nobody:***@")
    assert "secret" not in failed.output


@pytest.fixture
def empty_postgres(postgres_server: sa.URL) -> Iterator[str]:
    """A database on the PostgreSQL server that nothing has set up."""
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    name = f"{postgres_server.database}_empty"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def tables_of(url: str) -> list[str]:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_without_the_schema_is_not_set_up_by_a_reading_command(
    empty_postgres: str,
) -> None:
    line = one_error_line(cli("--database-url", empty_postgres, "grants", "list"))
    assert line.startswith("error: database_url: postgresql+psycopg://postgres@")
    assert "has no mailfleet schema (from --database-url); nothing was created." in line
    assert tables_of(empty_postgres) == []

    created = cli("--database-url", empty_postgres, "domains", "add", "example.com")
    ok(created)
    assert created.stderr.startswith("created a new database: postgresql")
    assert "grants" in tables_of(empty_postgres)
    assert "no grants" in ok(cli("--database-url", empty_postgres, "grants", "list"))


@pytest.mark.anyio
async def test_a_fleet_opened_with_create_false_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "mailfleet.db"
    with pytest.raises(DatabaseNotFound) as raised:
        async with Fleet(database_url=f"sqlite:///{path}", create=False):
            pass
    assert isinstance(raised.value, NotFound)
    assert raised.value.path == str(path)
    assert raised.value.field == "database_url"
    assert not path.parent.exists()

    async with Fleet(database_url=f"sqlite:///{path}") as fleet:
        assert fleet.database_created
    async with Fleet(database_url=f"sqlite:///{path}", create=False) as fleet:
        assert not fleet.database_created

    empty = tmp_path / "empty.db"
    empty.touch()  # a file, but no schema
    with pytest.raises(DatabaseNotFound, match="has no mailfleet schema"):
        async with Fleet(database_url=f"sqlite:///{empty}", create=False):
            pass


@pytest.mark.anyio
async def test_an_older_schema_is_upgraded_even_with_create_false(database_url: str) -> None:
    from alembic import command

    from mailfleet.store.database import Database
    from mailfleet.store.migrate import alembic_config, current_revision

    async with Fleet(database_url=database_url):  # the schema and the default application
        pass
    database = Database(database_url)
    try:
        database.write_sync(lambda c: command.downgrade(alembic_config(c), "0003"))
    finally:
        database.close()
    async with Fleet(database_url=database_url, create=False) as fleet:
        assert not fleet.database_created
        assert await fleet.database.read(current_revision) == SCHEMA_REVISION


def test_the_schema_revision_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_REVISION


# -- exit codes ---------------------------------------------------------------------------------


def test_provisioning_only_invalid_addresses_exits_1(mailfleet: Invoke) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    result = mailfleet("grants", "provision", "not-an-address", "x@unregistered.org")
    assert one_error_line(result) == "error: addresses: none of the 2 was provisioned"
    assert "0 created, 0 existing, 2 invalid" in result.stdout
    assert "x@unregistered.org" in result.stdout  # the reasons are listed all the same
    partly = mailfleet("grants", "provision", "a@example.com", "not-an-address")
    assert "1 created, 0 existing, 1 invalid" in ok(partly)


def test_removing_only_unknown_grants_exits_1(mailfleet: Invoke) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    ok(mailfleet("grants", "provision", "a@example.com"))
    assert one_error_line(mailfleet("grants", "deprovision", "x@example.com", "y@example.com")) == (
        "error: grants: none of the 2 grants named exists"
    )
    assert "removed 1 grant (2 named)" in ok(
        mailfleet("grants", "deprovision", "a@example.com", "x@example.com")
    )


@pytest.mark.parametrize(
    "args",
    [
        ("grants", "list", "--limit", "0"),
        ("outbox", "show", "1", "--raw", "--json"),
        ("outbox", "list", "--status", "lost"),
        ("--log-level", "loud", "grants", "list"),
        ("--log-format", "xml", "grants", "list"),
        ("grants", "list", "--unserved", "--status", "active"),
        ("grants", "nope"),
    ],
    ids=" ".join,
)
def test_bad_usage_exits_2(mailfleet: Invoke, args: tuple[str, ...]) -> None:
    result = mailfleet(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


# -- dead letters: paging, replaying ------------------------------------------------------------


def make_dead_letters(state: Any, count: int) -> list[int]:
    """``count`` messages to one grant, turned into dead letters; their entry ids."""

    async def work(fleet: Fleet) -> list[int]:
        await fleet.add_domain("example.com")
        await fleet.provision("dead@example.com")
        for n in range(count):
            await fleet.deliver("dead@example.com", f"Subject: n{n}\r\n\r\nx\r\n".encode())

        def kill(conn: sa.Connection) -> list[int]:
            conn.exec_driver_sql(
                "UPDATE queue_entries SET status = 'dead', attempts = 5, last_error = 'boom'"
            )
            return list(conn.exec_driver_sql("SELECT id FROM queue_entries ORDER BY id").scalars())

        return await fleet.database.write(kill)

    entries: list[int] = state(work)
    return entries


def test_dead_letters_page_and_replay(mailfleet: Invoke, state: Any) -> None:
    entries = make_dead_letters(state, 3)
    first = mailfleet("dead-letters", "list", "--limit", "2")
    assert footer(first) == f"showing 2 of 3; next page: --after {entries[1]}"
    rest = json_of(mailfleet("dead-letters", "list", "--after", str(entries[1]), "--json"))
    assert [d["entry_id"] for d in rest] == [entries[2]]
    assert set(rest[0]) == {"entry_id", "grant_id", "message_id", "attempts", "error", "subject"}

    assert one_error_line(mailfleet("dead-letters", "replay", "12345")) == (
        "error: entries: no dead letter 12345: nothing replayed"
    )
    partly = ok(mailfleet("dead-letters", "replay", str(entries[0]), "12345"))
    assert "replayed 1 dead letter; 1 of those named are not dead letters" in partly
    assert "replayed 2 dead letters" in ok(mailfleet("dead-letters", "replay"))
    assert "no dead letters to replay" in ok(mailfleet("dead-letters", "replay"))


# -- lists: pages, footers, tables that fit ----------------------------------------------------


def test_grants_page_by_address(mailfleet: Invoke) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    addresses = [f"agent-{n:03}@example.com" for n in range(250)]
    ok(mailfleet("grants", "provision", *addresses))

    first = mailfleet("grants", "list")
    assert len([line for line in ok(first).splitlines() if "@example.com" in line]) == 100
    assert footer(first) == "showing 100 of 250; next page: --after agent-099@example.com"

    seen: list[str] = []
    after: list[str] = []
    while True:
        page = mailfleet("grants", "list", "--json", *after)
        seen += [grant["address"] for grant in json_of(page)]
        if footer(page) is None:
            break
        after = ["--after", seen[-1]]
    assert seen == addresses

    one = mailfleet("grants", "list", "--status", "active", "--limit", "1", "--after", seen[-2])
    assert footer(one) is None  # the last one: no more pages
    assert "agent-249@example.com" in ok(one)


def test_unserved_grants_page(mailfleet: Invoke) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    ok(mailfleet("grants", "provision", "a@example.com", "b@example.com", "c@example.com"))
    first = mailfleet("grants", "list", "--unserved", "--limit", "2", "--json")
    assert [u["address"] for u in json_of(first)] == ["a@example.com", "b@example.com"]
    assert {"waiting", "address", "agent", "status"} <= set(json_of(first)[0])
    assert footer(first) == "showing 2 of 3; next page: --after b@example.com"
    rest = mailfleet("grants", "list", "--unserved", "--after", "b@example.com")
    assert "c@example.com" in ok(rest)
    assert footer(rest) is None


def test_events_page_and_fit_the_terminal(mailfleet: Invoke) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    ok(mailfleet("grants", "provision", *(f"a{n}@example.com" for n in range(5))))
    ids = [e["id"] for e in json_of(mailfleet("events", "--type", "grant.created", "--json"))]
    first = mailfleet("events", "--limit", "3", "--type", "grant.created")
    assert footer(first) == f"showing 3 of 5; next page: --after {ids[2]}"
    rest = json_of(mailfleet("events", "--after", str(ids[2]), "--json", "--type", "grant.created"))
    assert [event["payload"]["address"] for event in rest] == ["a3@example.com", "a4@example.com"]
    assert set(rest[0]) == {"id", "type", "grant_id", "created_at", "payload"}
    grant = rest[0]["grant_id"]
    assert [
        e["id"] for e in json_of(mailfleet("events", "--grant", "a3@example.com", "--json"))
    ] == [e["id"] for e in json_of(mailfleet("events", "--grant", grant, "--json"))]

    narrow = mailfleet("events", env={"COLUMNS": "80"})
    lines = ok(narrow).splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    rows = [line for line in lines if "grant.created" in line]
    assert len(rows) == 5  # one line per event, its id whole
    assert all(row.split()[0].isdigit() for row in rows)

    piped = ok(mailfleet("events", "--type", "grant.created"))  # no terminal: whole rows
    assert all(grant in line for line in piped.splitlines() if "a3@example.com" in line)


def test_outbox_pages_newest_first(mailfleet: Invoke, state: Any) -> None:
    async def send(fleet: Fleet) -> None:
        await fleet.add_domain("example.com")
        await fleet.provision("me@example.com")
        for n in range(3):
            await fleet.send("me@example.com", "you@example.org", subject=f"n{n}", text="hi")

    state(send)
    first = mailfleet("outbox", "list", "--limit", "2", "--json")
    newest = json_of(first)
    assert [m["subject"] for m in newest] == ["n2", "n1"]
    assert footer(first) == f"showing 2 of 3; next page: --after {newest[-1]['id']}"
    older = json_of(mailfleet("outbox", "list", "--after", str(newest[-1]["id"]), "--json"))
    assert [m["subject"] for m in older] == ["n0"]
    assert older[0]["recipients"] == ["you@example.org"]
    assert footer(mailfleet("outbox", "list", "--status", "sent")) is None
    assert "no outbox" in ok(mailfleet("outbox", "list", "--status", "sent"))


# -- outbox show: a clean message, the exact bytes, JSON --------------------------------------


def test_outbox_show_raw_is_the_exact_bytes(mailfleet: Invoke, state: Any) -> None:
    async def send(fleet: Fleet) -> bytes:
        await fleet.add_domain("example.com")
        await fleet.provision("me@example.com")
        sent = await fleet.send("me@example.com", "you@example.org", subject="Hi", text="Hello.")
        (view,) = await fleet.outbox()
        found = await fleet.outbox_message(view.id)
        assert sent.ok
        assert found is not None
        assert found.raw is not None
        return found.raw

    raw = state(send)
    exact = mailfleet("outbox", "show", "1", "--raw")
    assert exact.exit_code == 0
    assert exact.stdout_bytes == raw
    assert exact.stderr == ""
    assert b"\r\n" in exact.stdout_bytes
    assert b"DKIM-Signature:" in exact.stdout_bytes

    shown = mailfleet("outbox", "show", "1")
    assert ok(shown) == raw.decode().replace("\r\n", "\n")  # the message, nothing before it
    assert shown.stderr.startswith("status: pending; from bounces+")

    record = json_of(mailfleet("outbox", "show", "1", "--json"))
    assert base64.b64decode(record["raw_base64"]) == raw
    assert record["size"] == len(raw)
    assert record["status"] == "pending"
    assert record["subject"] == "Hi"

    assert one_error_line(mailfleet("outbox", "show", "99")) == (
        "error: id: no outbound message 99"
    )


# -- DNS records as they must be published ------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["", "v=DKIM1; k=ed25519; p=abc", "x" * 255, "x" * 256, "y" * 410, "z" * 765, "é" * 200],
    ids=["empty", "short", "255", "256", "410", "765", "2-byte"],
)
def test_txt_values_are_split_into_dns_strings(value: str) -> None:
    strings = txt_strings(value)
    assert "".join(strings) == value
    assert all(len(s.encode()) <= 255 for s in strings)
    assert len(strings) == max(1, -(-len(value.encode()) // 255))


def test_a_zone_line_quotes_each_string() -> None:
    record = DnsRecord("s._domainkey.example.com", 'a"b\\' + "c" * 300)
    line = record.zone_line()
    assert line.startswith('s._domainkey.example.com. IN TXT "a\\"b\\\\ccc')
    assert line.count('" "') == 1  # two strings
    assert (record.name, record.value) == ("s._domainkey.example.com", 'a"b\\' + "c" * 300)


def test_domains_records_split_the_rsa_record(mailfleet: Invoke, state: Any) -> None:
    added = ok(mailfleet("domains", "add", "example.com"))
    assert "example.com registered" in added
    assert "mailfleet (rsa), mailfleet-ed25519 (ed25519)" in added
    again = ok(mailfleet("domains", "add", "example.com", "--selector", "other"))
    assert "domain example.com already registered" in again
    assert "--selector other ignored" in again

    (domain,) = state(lambda fleet: fleet.domains())
    values = {record.name: record.value for record in domain.dkim_records}
    printed = ok(mailfleet("domains", "records", "example.com")).splitlines()
    lines = [line for line in printed if "._domainkey." in line]
    assert len(lines) == 2
    for line in lines:
        name, quoted = line.split(". IN TXT ", 1)
        strings = [part for part in quoted.strip('"').split('" "')]
        assert all(len(s) <= 255 for s in strings)
        assert "".join(strings) == values[name]
    rsa = next(line for line in lines if line.startswith("mailfleet._domainkey."))
    assert rsa.count('" "') >= 1  # 2048-bit key: over 255 characters

    records = json_of(mailfleet("domains", "records", "example.com", "--json"))
    dkim = [record for record in records if record["purpose"].startswith("dkim:")]
    for dns in dkim:
        assert "".join(dns["strings"]) == dns["value"] == values[dns["name"]]
        assert dns["type"] == "TXT"
    assert {dns["purpose"] for dns in dkim} == {"dkim:mailfleet", "dkim:mailfleet-ed25519"}
    (domain_json,) = json_of(mailfleet("domains", "list", "--json"))
    assert {d["key_type"] for d in domain_json["dkim_records"]} == {"rsa", "ed25519"}


# -- --json on every list and show command ------------------------------------------------------

# The commands that neither list nor show: they change things, or serve.
NOT_LIST_OR_SHOW = {
    "run",
    "worker",
    "api",  # serves, as run does
    "keys create",  # has --json, but creates: covered by tests/test_api_basics.py
    "domains add",
    "domains rotate",
    "domains retire",
    "workspaces create",
    "workspaces set-policy",
    "workspaces patterns",
    "workspaces assign",
    "workspaces regroup",
    "apply",  # policy as code: changes (--json prints the changes); tests/test_policy_code.py
    "export",  # YAML, the format apply reads
    "workspaces delete",
    "grants provision",
    "grants deprovision",
    "dead-letters replay",
    "suppressions add",
    "suppressions remove",
    "suppressions import",
    "suppressions export",  # CSV, the format import reads
    "inspect",  # JSON lines whatever the options: its only output
    "domains check",  # looks the domain up in DNS: tests/test_domain_auth.py covers its --json
    # lists and rules: changes, or need an id; tests/test_cli_policy.py covers their --json
    "lists create",
    "lists add",
    "lists remove",
    "lists delete",
    "lists show",
    "rules create",
    "rules delete",
    "rules show",
    "rules dry-run",
}
# Arguments a list or show command needs.
ARGUMENTS = {
    "outbox show": ["1"],
    "domains records": ["example.com"],
    "grants show": ["dead@example.com"],
}


def commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every command under ``group`` (a click group), by its path: ``grants list``..."""
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_list_and_show_command_prints_json(mailfleet: Invoke, state: Any) -> None:
    make_dead_letters(state, 1)

    async def send(fleet: Fleet) -> None:
        await fleet.send("dead@example.com", "you@example.org", subject="Hi", text="Hello.")

    state(send)
    found = dict(commands(typer.main.get_group(app)))
    assert NOT_LIST_OR_SHOW <= set(found), "an allowlisted command is gone: update the list"
    checked = []
    for path, command in found.items():
        if path in NOT_LIST_OR_SHOW:
            continue
        options = {opt for param in command.params for opt in getattr(param, "opts", ())}
        assert "--json" in options, f"mailfleet {path} lists or shows: give it --json"
        printed = mailfleet(*path.split(), *ARGUMENTS.get(path, []), "--json")
        assert isinstance(json_of(printed), list | dict), path
        checked.append(path)
    assert len(checked) >= 9, checked  # grants list, events, status, domains records...


def test_status_shows_the_store_wide_figures(mailfleet: Invoke, state: Any) -> None:
    make_dead_letters(state, 2)
    figures = json_of(mailfleet("status", "--json"))
    assert figures == {
        "application": "default",
        "database": figures["database"],
        "grants": 1,
        "waiting": 0,
        "dead_letters": 2,
        "outbound_pending": 0,
        "live_workers": 0,
        "unserved_grants": 1,
        "unserved_waiting": 0,
    }
    shown = ok(mailfleet("status"))
    assert any("dead letters" in line and "2" in line for line in shown.splitlines())


# -- logs --------------------------------------------------------------------------------------


def test_operator_commands_log_warnings_only_unless_told(mailfleet: Invoke) -> None:
    ok(mailfleet("domains", "add", "example.com"))
    quiet = mailfleet("grants", "provision", "a@example.com")
    assert "1 created" in ok(quiet)
    assert quiet.stderr == ""  # no INFO line for a one-shot call

    told = mailfleet("--log-level", "info", "grants", "provision", "b@example.com")
    assert "1 created" in ok(told)  # the output stays on stdout, the logs go to stderr
    (record,) = [json.loads(line) for line in told.stderr.splitlines()]
    assert record["logger"] == "mailfleet.directory"
    assert record["level"] == "info"
    assert "provisioned 1 addresses" in record["message"]

    env = {"MAILFLEET_LOG_LEVEL": "info", "MAILFLEET_LOG_FORMAT": "text"}
    text = mailfleet("grants", "provision", "c@example.com", env=env)
    ok(text)
    assert " INFO mailfleet.directory: provisioned 1 addresses" in text.stderr


def test_a_command_puts_the_logging_it_found_back(mailfleet: Invoke) -> None:
    logger = logging.getLogger("mailfleet")
    before = (list(logger.handlers), logger.level, logger.propagate)
    ok(mailfleet("--log-level", "debug", "workspaces", "list"))
    assert (list(logger.handlers), logger.level, logger.propagate) == before


# -- start-up: what an operator command imports ------------------------------------------------

# What only serving or sending needs: an operator command must not pay for it.
HEAVY = {
    "aiosmtpd",
    "aiosmtplib",
    "alembic",
    "cryptography",
    "dkim",
    "email_validator",
    "mako",
    "pluggy",
    "sqlmodel",
    "mailfleet.agent",
    "mailfleet.auth",
    "mailfleet.mail",
    "mailfleet.plugins",
    "mailfleet.transports",
}

PROBE = """
import json, runpy, sys
heavy = json.loads(sys.argv[2])
sys.argv = ["mailfleet", *json.loads(sys.argv[1])]
code = None
try:
    runpy.run_module("mailfleet", run_name="__main__")
except SystemExit as exit:
    code = exit.code
loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print("\\n" + json.dumps({"code": code, "loaded": loaded}))
"""


@pytest.mark.parametrize(
    "args",
    [
        ("grants", "list"),
        ("grants", "list", "--unserved"),
        ("events", "--json"),
        ("status",),
        ("domains", "list"),
        ("workspaces", "list"),
        ("outbox", "list"),
        ("dead-letters", "list"),
        ("--help",),
    ],
    ids=" ".join,
)
def test_operator_commands_import_nothing_heavy(args: tuple[str, ...], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mailfleet.db'}"
    create_database(url)  # an existing database at the current schema
    command = ["--database-url", url, *args]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(command), json.dumps(sorted(HEAVY))],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"code": 0, "loaded": []}, done.stderr


def test_importing_the_command_line_imports_no_database_code() -> None:
    probe = (
        "import sys, mailfleet.cli; print(sorted(m for m in sys.modules"
        " if m.startswith(('sqlalchemy', 'anyio', 'mailfleet.runtime', 'mailfleet.store'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
