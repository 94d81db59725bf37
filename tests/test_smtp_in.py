"""The MX over a real socket: an smtplib client talks to the fleet's aiosmtpd server."""

from __future__ import annotations

import json
import smtplib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.to_thread
import pytest
from aiosmtpd.smtp import SMTP

from mailfleet import Agent, Fleet, InboundMessage
from mailfleet.model.policy import PLATFORM_MAX_MESSAGE_BYTES
from mailfleet.transports.smtp_in import MxSMTP
from support import wait_until

pytestmark = pytest.mark.anyio
T = TypeVar("T")

MESSAGE = (
    b"From: Ada <ada@example.org>\r\nTo: desk@example.com\r\nSubject: Hello desk\r\n"
    b"Message-ID: <hello@example.org>\r\n\r\nIs anyone there?\r\n"
)


class Desk(Agent):
    seen: ClassVar[list[InboundMessage]] = []
    gate: ClassVar[anyio.Event | None] = None

    async def on_message(self, message: InboundMessage) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if message.subject and "Caf" in message.subject:
            _ = message.text  # reading the content parses it
        self.seen.append(message)


@asynccontextmanager
async def mx(database_url: str, **settings: Any) -> AsyncIterator[Fleet]:
    Desk.seen, Desk.gate = [], None
    async with Fleet(
        database_url=database_url, smtp_port=0, poll_interval=0.05, **settings
    ) as fleet:
        fleet.bind(Desk)
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com", agent=Desk)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_until(lambda: fleet.smtp_port is not None)
            yield fleet
            tg.cancel_scope.cancel()


async def smtp(fleet: Fleet, work: Callable[[smtplib.SMTP], T]) -> T:
    def run() -> T:
        with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0, timeout=10) as client:
            client.ehlo("client.example.org")
            return work(client)

    return await anyio.to_thread.run_sync(run)


def send(client: smtplib.SMTP, data: bytes = MESSAGE, to: str = "desk@example.com") -> Any:
    client.mail("ada@example.org")
    code, reply = client.rcpt(to)
    if code != 250:
        return ("rcpt", code, reply)
    return ("data", *client.data(data))


async def test_a_message_is_answered_250_once_stored_and_reaches_the_agent(
    database_url: str,
) -> None:
    async with mx(database_url) as fleet:
        step, code, reply = await smtp(fleet, send)
        assert (step, code) == ("data", 250)
        assert b"queued as" in reply
        (received,) = await fleet.events(type="message.received")  # committed before the 250
        await wait_until(lambda: len(Desk.seen) == 1)
        message = Desk.seen[0]
        assert message.id == received.payload["message_id"]
        assert message.subject == "Hello desk"
        assert message.raw.startswith(b"Return-Path: <ada@example.org>\r\nReceived: from ")
        assert message.raw.endswith(MESSAGE)


async def test_unknown_recipients_and_relaying_are_refused(database_url: str) -> None:
    async with mx(database_url) as fleet:

        def probe(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
            client.mail("ada@example.org")
            return [
                client.rcpt("nobody@example.com"),
                client.rcpt("someone@elsewhere.org"),
                client.rcpt("not an address"),
            ]

        replies = await smtp(fleet, probe)
        assert [code for code, _ in replies] == [550, 550, 501]
        assert b"5.1.1" in replies[0][1]  # the fleet's domain: an unknown mailbox
        assert replies[1][1] == b"5.7.1 <someone@elsewhere.org>: relay access denied"
        assert replies[2][1] == b"5.1.3 Bad recipient address syntax"
        assert await fleet.events(type="message.received") == []


async def test_oversize_mail_gets_552(database_url: str) -> None:
    async with mx(database_url) as fleet:
        await fleet.update_policy(
            "default", {"max_message_bytes": 2000, "max_attachment_bytes": 1000}
        )
        big = MESSAGE + (b"x" * 70 + b"\r\n") * 50
        step, code, reply = await smtp(fleet, lambda c: send(c, big))
        assert (step, code) == ("data", 552)
        assert b"5.3.4" in reply
        step, code, _ = await smtp(fleet, send)  # a small one still gets in
        assert code == 250


async def test_a_full_mailbox_gets_452(database_url: str) -> None:
    async with mx(database_url) as fleet:
        await fleet.update_policy("default", {"storage_limit_bytes": len(MESSAGE) + 50})
        assert (await smtp(fleet, send))[1] == 250  # fits; stored with its trace headers
        second = MESSAGE.replace(b"Hello desk", b"Hello again")
        step, code, reply = await smtp(fleet, lambda c: send(c, second))
        assert (step, code) == ("rcpt", 452)
        assert b"4.2.2" in reply


async def test_a_full_queue_gets_451_and_a_retry_is_not_stored_twice(database_url: str) -> None:
    async with mx(database_url, queue_limit=1) as fleet:
        Desk.gate = anyio.Event()  # the agent is busy: nothing leaves the queue
        assert (await smtp(fleet, send))[1] == 250
        other = MESSAGE.replace(b"Hello desk", b"Second")
        step, code, reply = await smtp(fleet, lambda c: send(c, other))
        assert (step, code) == ("data", 451)
        assert b"4.3.0" in reply
        assert (await smtp(fleet, send))[1] == 250  # the first again: already stored, no new copy
        Desk.gate.set()
        await wait_until(lambda: len(Desk.seen) == 1)
        await fleet.wait_idle()  # the handler's completion is committed: the queue has room
        assert len(await fleet.events(type="message.received")) == 1
        assert (await smtp(fleet, lambda c: send(c, other)))[1] == 250  # room again
        await wait_until(lambda: len(Desk.seen) == 2)


PATHS = [
    "<ada@example.org>",
    " <ada@example.org> SIZE=100 BODY=8BITMIME",
    "<ada@example.org>\tSIZE=1",
    "<a.b+c@x-y.example.org>",
    "<>",
    '<"quoted local"@example.org>',
    "ada@example.org",
    "<a..b@example.org>",
    "<a@[127.0.0.1]>",
    "<@relay.example:a@example.org>",
    "<a@example.org> (a comment) SIZE=1",
    "<a@example.org>>",
    "<José@example.org>",
    "<" + "a" * 70 + "@example.org>",
    "<broken@",
    "<a@-x.example.org>",
    "<a@x-.example.org>",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("local_part_limit", [0, 64])
async def test_the_mx_reads_paths_as_aiosmtpd_does(path: str, local_part_limit: int) -> None:
    def read(server: SMTP) -> object:
        server.local_part_limit = local_part_limit
        try:
            return server._getaddr(path)
        except Exception as exc:  # the stdlib parser fails on some input; so must we
            return type(exc)

    assert read(MxSMTP(Desk())) == read(SMTP(Desk()))


async def test_too_many_recipients_and_long_lines(database_url: str) -> None:
    async with mx(database_url, smtp_max_recipients=2) as fleet:
        await fleet.provision_many(["a@example.com", "b@example.com", "c@example.com"])

        def many(client: smtplib.SMTP) -> list[int]:
            client.mail("ada@example.org")
            return [client.rcpt(f"{n}@example.com")[0] for n in "abc"]

        assert await smtp(fleet, many) == [250, 250, 452]

        def long_lines(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
            command = client.docmd("NOOP " + "x" * 2000)
            data = send(client, MESSAGE + b"y" * 1200 + b"\r\n")[1:]
            return [command, data, client.noop()]

        command, data, after = await smtp(fleet, long_lines)
        assert command == (500, b"5.5.2 Command line too long (see RFC 5321 4.5.3.1.4)")
        assert data == (500, b"5.5.2 Line too long (see RFC 5321 4.5.3.1.6)")
        assert after[0] == 250
        assert await fleet.events(type="message.received") == []


BROKEN = (
    b"From: =?x-unknown?q?Bad?= <broken@example.org>\r\nTo: desk@example.com\r\n"
    b"Subject: Caf\xe9 \xff\xfe\r\n"
    b'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n'
    b"--never-closed\r\nContent-Type: text/plain; charset=klingon\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nnot base64 at all !!!\r\n"
)


async def test_malformed_mime_is_stored_and_its_defects_recorded(database_url: str) -> None:
    async with mx(database_url) as fleet:
        step, code, _ = await smtp(fleet, lambda c: send(c, BROKEN))
        assert (step, code) == ("data", 250)
        await wait_until(lambda: len(Desk.seen) == 1)
        message = Desk.seen[0]
        assert message.raw.endswith(BROKEN)  # stored as received
        assert message.text is not None  # readable, however broken
        found = " ".join(message.defects)
        assert "boundary" in found.lower()
        assert "charset" in found.lower()
        assert "Message-ID" in found  # missing header
        with anyio.fail_after(10):
            while True:
                stored = await fleet.database.read(
                    lambda c: c.exec_driver_sql(
                        f"SELECT defects FROM messages WHERE id = '{message.id}'"
                    ).scalar()
                )
                if stored:
                    break
                await anyio.sleep(0.02)
        stored = json.loads(stored) if isinstance(stored, str) else stored
        assert stored == list(message.defects)


async def test_ehlo_advertises_the_size_limit_and_mail_refuses_more(database_url: str) -> None:
    async with mx(database_url) as fleet:

        def probe(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
            limit = PLATFORM_MAX_MESSAGE_BYTES
            return [
                client.mail("ada@example.org", [f"SIZE={limit + 1}"]),
                client.rcpt("desk@example.com"),  # no transaction was opened
                client.mail("ada@example.org", [f"SIZE={limit}"]),
                client.rcpt("desk@example.com"),
            ]

        features, replies = await smtp(fleet, lambda c: (c.esmtp_features, probe(c)))
        assert features["size"] == str(25 * 1024 * 1024) == str(PLATFORM_MAX_MESSAGE_BYTES)
        assert replies[0] == (552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert replies[1][0] == 503
        assert [code for code, _ in replies[2:]] == [250, 250]


async def test_a_declared_size_is_held_to_each_grants_limits_at_rcpt(database_url: str) -> None:
    async with mx(database_url) as fleet:
        await fleet.create_workspace(
            "small",
            policy={
                "max_message_bytes": 10_000,
                "max_attachment_bytes": 5_000,
                "storage_limit_bytes": 50_000,
            },
        )
        await fleet.provision("small@example.com", workspace="small", agent=Desk)

        def rcpts(client: smtplib.SMTP, size: int | None) -> list[tuple[int, bytes]]:
            client.rset()
            client.mail("ada@example.org", [] if size is None else [f"SIZE={size}"])
            return [client.rcpt("desk@example.com"), client.rcpt("small@example.com")]

        def probe(client: smtplib.SMTP) -> list[list[tuple[int, bytes]]]:
            return [rcpts(client, size) for size in (20_000, 10_000, None, 60_000)]

        too_big, fits, undeclared, too_much = await smtp(fleet, probe)
        assert too_big[0][0] == 250  # the default workspace takes up to 25 MiB
        assert too_big[1] == (552, b"5.3.4 <small@example.com>: message too big for this mailbox")
        assert [code for code, _ in fits + undeclared] == [250, 250, 250, 250]
        await fleet.update_policy(
            "small", {"max_message_bytes": 100_000, "max_attachment_bytes": 5_000}
        )
        await anyio.sleep(1.1)  # the MX's lookup cache
        too_much = (await smtp(fleet, probe))[3]
        assert too_much[0][0] == 250
        assert too_much[1] == (452, b"4.2.2 <small@example.com>: mailbox full")


BAD_SENDERS = [
    "not-an-address",
    "ada@example.org",  # no angle brackets
    "<ada@example.org",
    "<a@b@c>",
    "<a b@example.org>",
    "<a(comment)@example.org>",
    "<.ada@example.org>",
    "<ada@-example.org>",
    "<ada@exa_mple.org>",
    "<ada@>",
    "<@example.org>",
    "< >",
    "<a@[bogus]>",
]
GOOD_SENDERS = [
    "<>",
    "<ada@example.org> SIZE=100 BODY=8BITMIME",
    '<"quoted local"@example.org>',
    '<"a\\"b"@example.org>',
    "<a@[127.0.0.1]>",
    "<a@[IPv6:2001:db8::1]>",
    "<@relay.example,@other.example:ada@example.org>",
    "<José@exämple.org> SMTPUTF8",
    "<ada@localhost>",
]


async def test_a_malformed_sender_is_refused_and_the_session_goes_on(database_url: str) -> None:
    async with mx(database_url) as fleet:

        def probe(client: smtplib.SMTP) -> tuple[list[tuple[int, bytes]], ...]:
            bad = [client.docmd("MAIL", f"FROM:{path}") for path in BAD_SENDERS]
            good = []
            for path in GOOD_SENDERS:
                client.command_encoding = "utf-8"  # reset to ASCII by RSET
                good.append(client.docmd("MAIL", f"FROM:{path}"))
                client.rset()
            return bad, good, [send(client)[1:]]

        bad, good, after = await smtp(fleet, probe)
        assert bad == [(501, b"5.1.7 Bad sender address syntax")] * len(BAD_SENDERS)
        assert good == [(250, b"2.1.0 OK")] * len(GOOD_SENDERS)
        assert after[0][0] == 250


async def test_mail_and_data_errors_have_enhanced_codes(database_url: str) -> None:
    async with mx(database_url) as fleet:

        def probe(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
            replies = [client.docmd("MAIL", "FROM:"), client.docmd("MAIL", "TO:<a@b.org>")]
            client.command_encoding = "utf-8"
            for options in ("FOO=1", "SIZE=many", "SIZE=\u00b2", "BODY=9BIT", "SMTPUTF8=yes"):
                replies.append(client.docmd("MAIL", f"FROM:<ada@example.org> {options}"))
            replies.append(client.mail("ada@example.org"))
            replies.append(client.mail("ada@example.org"))  # nested
            replies.append(client.docmd("DATA"))  # no recipient yet
            client.rcpt("desk@example.com")
            replies.append(client.docmd("DATA", "now"))
            return replies

        replies = await smtp(fleet, probe)
        syntax = (501, b"5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]")
        assert replies == [
            syntax,
            syntax,
            (555, b"5.5.4 MAIL FROM parameters not recognized or not implemented"),
            syntax,
            syntax,
            (501, b"5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME"),
            (501, b"5.5.4 Error: SMTPUTF8 takes no arguments"),
            (250, b"2.1.0 OK"),
            (503, b"5.5.1 Error: nested MAIL command"),
            (503, b"5.5.1 Error: need RCPT command"),
            (501, b"5.5.4 Syntax: DATA"),
        ]


async def test_a_bounce_keeps_its_null_reverse_path(database_url: str) -> None:
    async with mx(database_url) as fleet:

        def bounce(client: smtplib.SMTP) -> tuple[int, bytes]:
            client.docmd("MAIL", "FROM:<>")
            client.rcpt("desk@example.com")
            return client.data(MESSAGE)

        assert (await smtp(fleet, bounce))[0] == 250
        await wait_until(lambda: len(Desk.seen) == 1)
        assert Desk.seen[0].raw.startswith(b"Return-Path: <>\r\nReceived: from ")
