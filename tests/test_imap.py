"""The IMAP inbound source (plugins/mailfleet-imap) against a real Dovecot on loopback.

Mail is put into the mailboxes with IMAP APPEND (stdlib imaplib, in a
thread); what the agent receives is checked through its handler and the
fleet's ``message.received`` events.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest

from dovecot import HOST, Dovecot, dovecot_available, dovecot_fixture  # noqa: F401 - fixture
from mailfleet import Agent, Fleet, Grant, InboundMessage, InvalidInput, Settings
from mailfleet.plugins import ENTRY_POINT_GROUP, InboundSource, inbound_sources, plugin_manager
from support import ON_CI, wait_until

if not ON_CI:  # on CI a missing plugin is an error, as the import below makes it
    pytest.importorskip(
        "mailfleet_imap", reason="not installed: pip install -e plugins/mailfleet-imap"
    )

from mailfleet_imap import ImapConfig, ImapMailbox, Tls, parse_mailboxes
from mailfleet_imap.fingerprints import CHUNK, FingerprintRing, fingerprint, message_id
from mailfleet_imap.session import encode_mailbox, parse_fetch

pytestmark = pytest.mark.anyio

FAST = {
    "poll_interval": 0.05,
    "lease_ttl": 3.0,
    "retry_base": 0.02,
    "retry_max": 0.05,
    "handler_timeout": 5.0,
    "shutdown_grace": 2.0,
}
ADDRESS = "inbox@example.com"


def mail(subject: str, *, message_id: str | None = "default") -> bytes:
    """A small message; ``message_id=None`` leaves the Message-ID header out."""
    header = ""
    if message_id is not None:
        found = (
            f"{subject.replace(' ', '-')}@example.org" if message_id == "default" else message_id
        )
        header = f"Message-ID: <{found}>\r\n"
    return (
        f"From: someone@example.org\r\nTo: {ADDRESS}\r\nSubject: {subject}\r\n{header}"
        f"\r\nHello from {subject}.\r\n"
    ).encode()


class Inbox(Agent):
    """Records the subjects of the messages it handles, per grant, in order.

    Handling is at-least-once (a handler may run again for the same stored
    message); what must never happen here is a second stored message for one
    mail, so messages are told apart by their mailfleet id.
    """

    handled: ClassVar[dict[str, dict[str, str]]] = defaultdict(dict)
    gate: ClassVar[anyio.Event | None] = None

    async def on_message(self, message: InboundMessage) -> None:
        gate = type(self).gate
        if gate is not None:
            await gate.wait()
        type(self).handled[self.grant.id].setdefault(message.id, message.subject or "")

    @classmethod
    def seen(cls, grant: Grant) -> list[str]:
        return list(cls.handled[grant.id].values())


@pytest.fixture(autouse=True)
def _fresh_inbox() -> None:
    Inbox.handled = defaultdict(dict)
    Inbox.gate = None


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For tests about the IMAP side, where the database backend does not matter."""
    return f"sqlite:///{tmp_path / 'mailfleet.db'}"


def imap_config(server: Dovecot, user: tuple[str, str], **overrides: Any) -> ImapConfig:
    options: dict[str, Any] = {
        "grant": ADDRESS,
        "host": HOST,
        "port": server.port,
        "username": user[0],
        "password": user[1],
        "tls": "none",
        "poll_interval": 0.2,
        "timeout": 5.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.3,
        **overrides,
    }
    return ImapConfig.model_validate(options)


@asynccontextmanager
async def open_fleet(database_url: str, **settings: Any) -> AsyncIterator[tuple[Fleet, Grant]]:
    async with Fleet(database_url=database_url, application="test", **{**FAST, **settings}) as f:
        f.bind(Inbox)
        await f.add_domain("example.com")
        grant = await f.provision(ADDRESS, agent=Inbox)
        yield f, grant


@asynccontextmanager
async def serving(fleet: Fleet, *sources: ImapMailbox) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.serve)
        for source in sources:
            tg.start_soon(source.serve, fleet)
        yield
        tg.cancel_scope.cancel()


async def append(
    server: Dovecot, user: tuple[str, str], *messages: bytes, mailbox: str = "INBOX"
) -> None:
    await anyio.to_thread.run_sync(lambda: server.append(user, *messages, mailbox=mailbox))


async def received(fleet: Fleet, grant: Grant) -> list[str]:
    events = await fleet.events(type="message.received", grant=grant.id, limit=10_000)
    return [e.payload["subject"] for e in events]


async def wait_received(fleet: Fleet, grant: Grant, count: int, *, within: float = 20) -> None:
    """Wait until the grant has ``count`` ``message.received`` events and its agent saw them."""
    with anyio.fail_after(within):
        while len(await received(fleet, grant)) < count:  # noqa: ASYNC110 - state in the db
            await anyio.sleep(0.02)
    await wait_until(lambda: len(Inbox.seen(grant)) >= count, within=within)


# -- delivery -------------------------------------------------------------------------------


async def test_mail_in_the_mailbox_and_new_mail_reach_the_agent(
    dovecot_server: Dovecot, database_url: str
) -> None:
    user = dovecot_server.user()
    await append(dovecot_server, user, mail("old 1"), mail("old 2"))
    source = ImapMailbox(imap_config(dovecot_server, user))
    async with open_fleet(database_url) as (fleet, grant), serving(fleet, source):
        await wait_received(fleet, grant, 2)
        await append(dovecot_server, user, mail("new 1"))
        await wait_received(fleet, grant, 3)
        await anyio.sleep(0.5)  # several more syncs: nothing more arrives
        assert Inbox.seen(grant) == ["old 1", "old 2", "new 1"]
        assert await received(fleet, grant) == ["old 1", "old 2", "new 1"]
        validity = await anyio.to_thread.run_sync(dovecot_server.uidvalidity, user)
        cursor = await fleet.cursor(grant.id, source.name)
        assert cursor is not None
        assert (cursor["uidvalidity"], cursor["uid"]) == (validity, 3)
        stats = source.statistics()
        assert (stats.connected, stats.delivered, stats.skipped, stats.last_uid) == (
            True,
            3,
            0,
            3,
        )
    assert source.name == f"imap:{user[0]}@{HOST}/INBOX"


async def test_restarts_deliver_nothing_twice(dovecot_server: Dovecot, database_url: str) -> None:
    user = dovecot_server.user()
    config = imap_config(dovecot_server, user)
    await append(dovecot_server, user, *(mail(f"m{n}") for n in range(1, 4)))
    async with open_fleet(database_url) as (fleet, grant), serving(fleet, ImapMailbox(config)):
        await wait_received(fleet, grant, 3)

    await append(dovecot_server, user, mail("m4"))
    async with open_fleet(database_url) as (fleet, grant), serving(fleet, ImapMailbox(config)):
        await wait_received(fleet, grant, 4)
        await anyio.sleep(0.5)
    # As if the process had died after delivering UIDs 2..4 but before the cursor moved:
    # the source fetches them again and delivers them with the same keys, which store nothing.
    async with open_fleet(database_url) as (fleet, grant):
        cursor = await fleet.cursor(grant.id, config.source_name)
        assert cursor is not None
        assert cursor["uid"] == 4
        await fleet.set_cursor(grant.id, config.source_name, {**cursor, "uid": 1})
        source = ImapMailbox(config)
        async with serving(fleet, source):
            await wait_until(lambda: source.statistics().delivered == 3)
            await anyio.sleep(0.3)
        assert await received(fleet, grant) == ["m1", "m2", "m3", "m4"]
        assert (await fleet.cursor(grant.id, config.source_name) or {})["uid"] == 4
    assert Inbox.seen(grant) == ["m1", "m2", "m3", "m4"]


async def test_without_backfill_only_new_mail_is_delivered(
    dovecot_server: Dovecot, sqlite_url: str
) -> None:
    user = dovecot_server.user()
    await append(dovecot_server, user, mail("before 1"), mail("before 2"))
    source = ImapMailbox(imap_config(dovecot_server, user, backfill=False))
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_until(lambda: source.statistics().last_uid == 2)
        await append(dovecot_server, user, mail("after"))
        await wait_received(fleet, grant, 1)
        await anyio.sleep(0.3)
        assert await received(fleet, grant) == ["after"]


async def test_a_uidvalidity_change_delivers_new_mail_and_old_mail_not_twice(
    dovecot_server: Dovecot, database_url: str
) -> None:
    user = dovecot_server.user()
    await anyio.to_thread.run_sync(dovecot_server.create, user, "Work")
    old = [mail("a"), mail("b"), mail("no id", message_id=None)]
    await append(dovecot_server, user, *old, mailbox="Work")
    before = await anyio.to_thread.run_sync(dovecot_server.uidvalidity, user, "Work")
    source = ImapMailbox(imap_config(dovecot_server, user, mailbox="Work"))
    async with open_fleet(database_url) as (fleet, grant), serving(fleet, source):
        await wait_received(fleet, grant, 3)
        # The mailbox is recreated (as by a server migration) while the source watches it:
        # same messages, new UIDs under a new UIDVALIDITY, and one really new message.
        await anyio.to_thread.run_sync(dovecot_server.delete, user, "Work")
        await anyio.to_thread.run_sync(dovecot_server.create, user, "Work")
        after = await anyio.to_thread.run_sync(dovecot_server.uidvalidity, user, "Work")
        assert after != before
        await append(dovecot_server, user, mail("c"), *old, mailbox="Work")
        await wait_received(fleet, grant, 4)
        await wait_until(lambda: source.statistics().skipped == 3, within=20)
        await anyio.sleep(0.5)
        assert await received(fleet, grant) == ["a", "b", "no id", "c"]
        assert Inbox.seen(grant) == ["a", "b", "no id", "c"]
        cursor = await fleet.cursor(grant.id, source.name)
        assert cursor is not None
        assert (cursor["uidvalidity"], cursor["uid"]) == (after, 4)

    # Restarted under the new validity: still nothing twice, and a new message arrives.
    await append(dovecot_server, user, mail("d"), mailbox="Work")
    source = ImapMailbox(imap_config(dovecot_server, user, mailbox="Work"))
    async with open_fleet(database_url) as (fleet, grant), serving(fleet, source):
        await wait_received(fleet, grant, 5)
        await anyio.sleep(0.3)
        assert await received(fleet, grant) == ["a", "b", "no id", "c", "d"]


async def test_idle_delivers_without_waiting_for_the_poll_interval(
    dovecot_server: Dovecot, sqlite_url: str
) -> None:
    user = dovecot_server.user()
    source = ImapMailbox(imap_config(dovecot_server, user, poll_interval=3600))
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_until(lambda: source.statistics().idling)
        started = time.monotonic()
        await append(dovecot_server, user, mail("pushed"))
        await wait_received(fleet, grant, 1, within=10)
        latency = time.monotonic() - started
        await wait_until(lambda: source.statistics().idling)  # and back to IDLE
    assert latency < 5, latency
    assert source.statistics().sessions == 1


async def test_without_idle_the_mailbox_is_polled(dovecot_server: Dovecot, sqlite_url: str) -> None:
    user = dovecot_server.user()
    source = ImapMailbox(imap_config(dovecot_server, user, idle=False, poll_interval=0.1))
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_until(lambda: source.statistics().connected)
        await append(dovecot_server, user, mail("polled 1"), mail("polled 2"))
        await wait_received(fleet, grant, 2)
        assert not source.statistics().idling
    assert Inbox.seen(grant) == ["polled 1", "polled 2"]


async def test_a_server_without_idle_is_polled_and_login_is_used(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No IDLE, no SASL-IR: the source polls, and logs in with LOGIN (quoted password)."""
    dovecot_available()
    caplog.set_level(logging.DEBUG)
    with Dovecot(users=1, capabilities="IMAP4rev1 LITERAL+") as server:
        user = server.user()
        source = ImapMailbox(imap_config(server, user, poll_interval=0.1))
        async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
            await wait_until(lambda: source.statistics().connected)
            await append(server, user, mail("polled"))
            await wait_received(fleet, grant, 1)
            assert not source.statistics().idling
    assert "polling every 0.1s" in caplog.text
    assert " LOGIN " in caplog.text  # aioimaplib's debug log of the command, password masked
    assert "cr\\et" not in caplog.text
    assert source.statistics().failures == 0


async def test_a_full_queue_makes_the_source_wait(dovecot_server: Dovecot, sqlite_url: str) -> None:
    user = dovecot_server.user()
    Inbox.gate = anyio.Event()
    await append(dovecot_server, user, *(mail(f"q{n}") for n in range(6)))
    source = ImapMailbox(imap_config(dovecot_server, user))
    async with open_fleet(sqlite_url, queue_limit=2) as (fleet, grant), serving(fleet, source):
        await wait_until(lambda: source.statistics().delivered >= 2)
        await anyio.sleep(0.5)
        assert source.statistics().delivered <= 3  # held back by the full queue
        assert source.statistics().failures == 0  # waiting, not failing
        Inbox.gate.set()
        await wait_received(fleet, grant, 6)
    assert Inbox.seen(grant) == [f"q{n}" for n in range(6)]


async def test_a_mailbox_with_a_unicode_name(dovecot_server: Dovecot, sqlite_url: str) -> None:
    user = dovecot_server.user()
    name = "Входящие & Co"
    encoded = f'"{encode_mailbox(name)}"'
    await anyio.to_thread.run_sync(dovecot_server.create, user, encoded)
    await append(dovecot_server, user, mail("unicode"), mailbox=encoded)
    source = ImapMailbox(imap_config(dovecot_server, user, mailbox=name))
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_received(fleet, grant, 1)


# -- connections ---------------------------------------------------------------------------


async def test_the_source_reconnects_when_the_server_comes_back(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    dovecot_available()
    caplog.set_level(logging.DEBUG)
    with Dovecot(users=1) as server:
        user = server.user()
        source = ImapMailbox(imap_config(server, user, poll_interval=3600))
        async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
            await append(server, user, mail("before"))
            await wait_received(fleet, grant, 1)
            await wait_until(lambda: source.statistics().idling)

            await anyio.to_thread.run_sync(server.stop)
            await wait_until(lambda: not source.statistics().connected)
            await wait_until(lambda: source.statistics().failures >= 3)  # refused, retried

            await anyio.to_thread.run_sync(server.start)
            await wait_until(lambda: source.statistics().idling)
            await append(server, user, mail("after"))
            await wait_received(fleet, grant, 2)
            await anyio.sleep(0.3)
            assert await received(fleet, grant) == ["before", "after"]
        stats = source.statistics()
        assert stats.sessions == 2
        assert stats.delivered == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(grant.id in w and "reconnecting" in w for w in warnings), warnings
    assert user[1] not in caplog.text


@pytest.mark.parametrize("tls", [Tls.IMPLICIT, Tls.STARTTLS])
async def test_tls(dovecot_server: Dovecot, sqlite_url: str, tls: Tls) -> None:
    user = dovecot_server.user()
    port = dovecot_server.tls_port if tls is Tls.IMPLICIT else dovecot_server.port
    config = imap_config(
        dovecot_server, user, tls=tls, port=port, ca_file=str(dovecot_server.ca_file)
    )
    source = ImapMailbox(config)
    await append(dovecot_server, user, mail(f"over {tls}"))
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_received(fleet, grant, 1)
    assert source.statistics().failures == 0


async def test_an_untrusted_certificate_is_refused_and_retried(
    dovecot_server: Dovecot, sqlite_url: str
) -> None:
    user = dovecot_server.user()
    await append(dovecot_server, user, mail("never"))
    config = imap_config(dovecot_server, user, tls="implicit", port=dovecot_server.tls_port)
    source = ImapMailbox(config)
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_until(lambda: source.statistics().failures >= 3)
        assert "CERTIFICATE_VERIFY_FAILED" in (source.statistics().last_error or "")
        assert await received(fleet, grant) == []


async def test_a_refused_login_is_retried_and_the_password_never_logged(
    dovecot_server: Dovecot, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = dovecot_server.user()
    wrong = 'not-"the"\\-password'
    config = imap_config(dovecot_server, user, password=wrong)
    source = ImapMailbox(config)
    assert wrong not in repr(source)
    assert wrong not in repr(config)
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_until(lambda: source.statistics().failures >= 3)
        assert "AUTHENTICATIONFAILED" in (source.statistics().last_error or "")
        assert not source.statistics().connected
    assert grant.id in caplog.text
    assert "not-" not in caplog.text
    assert "cr\\et" not in caplog.text


async def test_an_unknown_grant_is_retried_without_stopping_the_fleet(
    dovecot_server: Dovecot, sqlite_url: str
) -> None:
    user = dovecot_server.user()
    await append(dovecot_server, user, mail("for later"))
    source = ImapMailbox(imap_config(dovecot_server, user, grant="later@example.com"))
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet, source):
        await wait_until(lambda: source.statistics().failures >= 2)
        assert "later@example.com" in (source.statistics().last_error or "")
        later = await fleet.provision("later@example.com", agent=Inbox)
        await wait_received(fleet, later, 1)
        assert await received(fleet, grant) == []


# -- the plugin ---------------------------------------------------------------------------


def mailboxes_env(monkeypatch: pytest.MonkeyPatch, value: Any) -> None:
    text = value if isinstance(value, str) else json.dumps(value)
    monkeypatch.setenv("MAILFLEET_IMAP_MAILBOXES", text)


BASE = {"grant": ADDRESS, "host": "imap.example.com", "username": "u", "password": "p4ss"}


def test_the_plugin_is_registered_under_its_entry_point() -> None:
    (entry,) = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "imap"]
    assert entry.value == "mailfleet_imap.plugin"
    assert "imap" in dict(plugin_manager().list_name_plugin())
    assert "imap" not in dict(plugin_manager(allow=set()).list_name_plugin())


def test_without_the_variable_the_plugin_contributes_nothing() -> None:
    sources = inbound_sources(plugin_manager(allow={"imap"}), Settings())
    assert sources == []


def test_the_variable_configures_one_source_per_mailbox(monkeypatch: pytest.MonkeyPatch) -> None:
    mailboxes_env(
        monkeypatch,
        [BASE, {**BASE, "mailbox": "Sales", "tls": "starttls", "grant": "b@example.com"}],
    )
    sources: list[InboundSource] = inbound_sources(plugin_manager(allow={"imap"}), Settings())
    assert all(isinstance(s, InboundSource) and isinstance(s, ImapMailbox) for s in sources)
    first, second = (s for s in sources if isinstance(s, ImapMailbox))
    assert first.name == "imap:u@imap.example.com/INBOX"
    assert (first.config.effective_port, second.config.effective_port) == (993, 143)
    assert second.config.mailbox == "Sales"


@pytest.mark.parametrize(
    ("value", "field", "words"),
    [
        ("[{", "MAILFLEET_IMAP_MAILBOXES", "not valid JSON"),
        ('"text"', "MAILFLEET_IMAP_MAILBOXES", "JSON list"),
        ([BASE, 3], "MAILFLEET_IMAP_MAILBOXES[1]", "JSON object"),
        ([{**BASE, "port": 70000}], "MAILFLEET_IMAP_MAILBOXES[0].port", "65535"),
        ([{**BASE, "hots": "x"}], "MAILFLEET_IMAP_MAILBOXES[0].hots", "not permitted"),
        (
            [{k: v for k, v in BASE.items() if k != "host"}],
            "MAILFLEET_IMAP_MAILBOXES[0].host",
            "required",
        ),
        ([{**BASE, "tls": "none"}], "MAILFLEET_IMAP_MAILBOXES[0].tls", "loopback"),
        ([{**BASE, "tls": "maybe"}], "MAILFLEET_IMAP_MAILBOXES[0].tls", "implicit"),
        ([{**BASE, "password": None}], "MAILFLEET_IMAP_MAILBOXES[0]", "exactly one"),
        ([{**BASE, "password": "a\r\nb"}], "MAILFLEET_IMAP_MAILBOXES[0].password", "CR"),
        ([{**BASE, "poll_interval": 0}], "MAILFLEET_IMAP_MAILBOXES[0].poll_interval", "greater"),
        ([BASE, BASE], "MAILFLEET_IMAP_MAILBOXES[1].name", "twice"),
        (
            [{**BASE, "password": None, "password_env": "NOT_SET_ANYWHERE"}],
            "MAILFLEET_IMAP_MAILBOXES[0].password_env",
            "not set",
        ),
    ],
)
def test_a_malformed_variable_names_the_bad_field(
    monkeypatch: pytest.MonkeyPatch, value: Any, field: str, words: str
) -> None:
    mailboxes_env(monkeypatch, value)
    with pytest.raises(InvalidInput) as raised:
        inbound_sources(plugin_manager(allow={"imap"}), Settings())
    assert raised.value.field == field
    assert words in raised.value.message
    assert "p4ss" not in str(raised.value)


def test_the_password_may_come_from_another_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALES_IMAP_PASSWORD", "from-env")
    (config,) = parse_mailboxes(
        '{"grant": "a@example.com", "host": "127.0.0.1", "username": "u", "tls": "none",'
        ' "password_env": "SALES_IMAP_PASSWORD"}'
    )
    assert config.secret() == "from-env"
    assert "from-env" not in repr(config)


async def test_fleet_serve_runs_the_configured_mailboxes(
    dovecot_server: Dovecot, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = dovecot_server.user()
    mailboxes_env(
        monkeypatch,
        [
            {
                "grant": ADDRESS,
                "host": HOST,
                "port": dovecot_server.port,
                "username": user[0],
                "password": user[1],
                "tls": "none",
            }
        ],
    )
    await append(dovecot_server, user, mail("through the plugin"))
    async with open_fleet(sqlite_url) as (fleet, grant), serving(fleet):
        await wait_received(fleet, grant, 1)
    assert Inbox.seen(grant) == ["through the plugin"]


# -- pieces ---------------------------------------------------------------------------------


async def test_the_fingerprint_ring_keeps_the_last_window_across_validities(
    sqlite_url: str,
) -> None:
    prints = [f"p{n}" for n in range(1300)]
    async with open_fleet(sqlite_url) as (fleet, grant):
        ring = FingerprintRing(fleet, grant.id, "imap:test", window=2 * CHUNK)
        await ring.load(None, 1)
        for n, print_ in enumerate(prints[:1200]):
            ring.add(print_, 1)
            if n % 7 == 0:
                await ring.save()
        await ring.save()
        position = ring.position()
        assert position == [0, 200]  # two chunks: the first was overwritten by the last 200

        same = FingerprintRing(fleet, grant.id, "imap:test", window=2 * CHUNK)
        await same.load(position, 1)
        assert not any(same.seen_before(p) for p in prints)  # one validity: nothing skipped

        later = FingerprintRing(fleet, grant.id, "imap:test", window=2 * CHUNK)
        await later.load(position, 2)
        assert [p for p in prints if later.seen_before(p)] == prints[500:1200]

        # A crash after the chunks were written but before the position was: the
        # entries past the position are ignored, and overwritten by the retry.
        for print_ in prints[1200:]:
            ring.add(print_, 1)
        await ring.save()
        again = FingerprintRing(fleet, grant.id, "imap:test", window=2 * CHUNK)
        await again.load(position, 2)
        assert [p for p in prints if again.seen_before(p)] == prints[500:1200]


def test_fetch_answers_are_parsed_wherever_the_uid_is() -> None:
    lines: list[bytes | bytearray] = [
        b"1 FETCH (UID 7 BODY[] {5}",
        bytearray(b"hello"),
        b")",
        b"2 FETCH (FLAGS (\\Seen))",  # unsolicited: no body
        b"3 FETCH (BODY[] {3}",
        bytearray(b"UID"),
        b" UID 9)",
        b"Fetch completed.",
    ]
    assert parse_fetch(lines) == {7: b"hello", 9: b"UID"}


def test_mailbox_names_use_modified_utf7() -> None:
    assert encode_mailbox("INBOX") == "INBOX"
    assert encode_mailbox("A & B") == "A &- B"
    assert encode_mailbox("~peter/mail/台北/日本語") == "~peter/mail/&U,BTFw-/&ZeVnLIqe-"


def test_fingerprints_follow_the_message_id_else_the_bytes() -> None:
    assert message_id(mail("x", message_id="abc@example.org")) == "abc@example.org"
    assert fingerprint(mail("x", message_id="same@id")) == fingerprint(
        mail("y", message_id="same@id")
    )
    assert fingerprint(mail("x", message_id=None)) != fingerprint(mail("y", message_id=None))
    assert fingerprint(mail("x", message_id=None)) == fingerprint(mail("x", message_id=None))
    assert len(fingerprint(b"")) == 16
