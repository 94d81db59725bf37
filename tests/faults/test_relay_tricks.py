"""Relay tricks against the real MX with a real client: swaks (from Debian).

One fleet serves the MX for the whole module, with grants on two local
domains, ``example.com`` and the IDN ``exämple.com``. swaks sends a whole
message to each address below (MAIL, RCPT, and DATA when RCPT was taken):
the test reads swaks' transcript for the server's reply to RCPT (code and
enhanced code) and then the store, where nothing may appear but a message
for a local grant, and nothing may wait to go out.

NUL cannot travel in a command-line argument, so the NUL cases and the
Unicode forms (swaks cannot say ``SMTPUTF8`` on MAIL) go over a socket.
The MX's reply table is in src/mailfleet/transports/smtp_in.py.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa

from mailfleet import Agent, Fleet, InboundMessage
from mailfleet.store.tables import messages_table, outbound_table
from support import debian_tool, wait_until

pytestmark = pytest.mark.anyio

RELAY_DENIED = "550 5.7.1"
ROUTE_DENIED = "550 5.7.1"  # a route in the local part; the text says which
UNKNOWN = "550 5.1.1"
SYNTAX = "501 5.1.3"
NEEDS_SMTPUTF8 = "553 5.6.7"
ACCEPTED = "250 2.1.5"


@dataclass(frozen=True)
class Trick:
    to: str | bytes
    """swaks' ``--to``: it sends ``RCPT TO:<to>``."""
    reply: str
    """The code and enhanced code of the MX's reply to RCPT."""
    words: str = ""
    """What the reply's text must say besides."""
    grant: str | None = None
    """The local grant that gets the message, for a legitimate address."""


LOCAL = "desk@example.com"
IDN = "desk@xn--exmple-cua.com"  # desk@exämple.com, as the store keeps it

TRICKS = {
    "plain local (control)": Trick(LOCAL, ACCEPTED, grant=LOCAL),
    "unknown local (control)": Trick("nobody@example.com", UNKNOWN, "no such mailbox"),
    "foreign (control)": Trick("desk@foreign.example", RELAY_DENIED, "relay access denied"),
    # the percent hack
    "percent hack": Trick("desk%foreign.example@example.com", ROUTE_DENIED, "route"),
    "percent hack, twice": Trick("desk%foreign.example%x.example@example.com", ROUTE_DENIED),
    "percent hack on a foreign domain": Trick("desk%example.com@foreign.example", RELAY_DENIED),
    # source routes: ignored (RFC 5321 appendix C); the mailbox after them decides
    "source route to a foreign mailbox": Trick("@a.example:desk@foreign.example", RELAY_DENIED),
    "source route via the local domain": Trick("@example.com:desk@foreign.example", RELAY_DENIED),
    "source route to a local mailbox": Trick(
        "@foreign.example:desk@example.com", ACCEPTED, grant=LOCAL
    ),
    "source route with no mailbox": Trick("@foreign.example:", SYNTAX),
    # bang paths
    "bang path at the local domain": Trick("foreign.example!desk@example.com", ROUTE_DENIED),
    "bang path alone": Trick("foreign.example!desk", SYNTAX),
    "bang path, two hops": Trick("a.example!foreign.example!desk@example.com", ROUTE_DENIED),
    # quoted and escaped local parts
    "quoted @ in the local part": Trick('"desk@foreign.example"@example.com', ROUTE_DENIED),
    "quoted percent hack": Trick('"desk%foreign.example"@example.com', ROUTE_DENIED),
    "quoted local part, same address": Trick('"desk"@example.com', ACCEPTED, grant=LOCAL),
    "escaped @ outside quotes": Trick("desk\\@foreign.example@example.com", SYNTAX),
    "escaped @ inside quotes": Trick('"desk\\@foreign.example"@example.com', ROUTE_DENIED),
    "two @": Trick("desk@foreign.example@example.com", SYNTAX),
    "quoted space": Trick('"de sk"@example.com', UNKNOWN),
    # case and IDN: the same domain in any case or form; a foreign one stays foreign
    "upper-case domain": Trick("desk@EXAMPLE.COM", ACCEPTED, grant=LOCAL),
    "mixed-case address": Trick("Desk@Example.Com", ACCEPTED, grant=LOCAL),
    "punycode of a local IDN": Trick(IDN, ACCEPTED, grant=IDN),
    "upper-case punycode": Trick("DESK@XN--EXMPLE-CUA.COM", ACCEPTED, grant=IDN),
    "Unicode of a local IDN, no SMTPUTF8": Trick("desk@exämple.com", NEEDS_SMTPUTF8, "SMTPUTF8"),
    "punycode of a foreign IDN": Trick("desk@xn--bcher-kva.example", RELAY_DENIED),
    "Unicode of a foreign IDN, no SMTPUTF8": Trick("desk@bücher.example", NEEDS_SMTPUTF8),
    "mixed-case foreign": Trick("desk@FOREIGN.Example", RELAY_DENIED),
    "local name as a subdomain": Trick("desk@example.com.foreign.example", RELAY_DENIED),
    "local name as a suffix": Trick("desk@notexample.com", RELAY_DENIED),
    "trailing dot": Trick("desk@example.com.", SYNTAX),
    "address literal": Trick("desk@[127.0.0.1]", RELAY_DENIED),
    "IPv6 literal": Trick("desk@[IPv6:::1]", RELAY_DENIED),
    # 8-bit bytes that are not UTF-8 (Latin-1), anywhere in the address
    "8-bit local part": Trick(b"d\xe9sk@example.com", SYNTAX, "syntax"),
    "8-bit domain": Trick(b"desk@ex\xe4mple.com", SYNTAX),
    "8-bit byte 0xff": Trick(b"desk\xff@foreign.example", SYNTAX),
    "control character": Trick("desk\x01@example.com", SYNTAX),
    "DEL": Trick("desk\x7f@example.com", SYNTAX),
    "no domain": Trick("desk@", SYNTAX),
    "no address": Trick("desk", SYNTAX),
}


class Desk(Agent):
    async def on_message(self, message: InboundMessage) -> None:
        pass


@dataclass
class Mx:
    fleet: Fleet
    port: int
    grants: dict[str, str]
    """address -> grant id"""

    async def stored(self) -> list[str]:
        """The grant of every message stored so far, in order."""

        def read(conn: sa.Connection) -> list[str]:
            rows = conn.execute(
                sa.select(messages_table.c.grant_id).order_by(
                    messages_table.c.created_at, messages_table.c.id
                )
            )
            return [row.grant_id for row in rows]

        return await self.fleet.database.read(read)

    async def outbound(self) -> int:
        def read(conn: sa.Connection) -> int:
            return conn.execute(sa.select(sa.func.count()).select_from(outbound_table)).scalar_one()

        return await self.fleet.database.read(read)


@pytest.fixture(scope="module")
def swaks() -> str:
    return debian_tool("swaks", "swaks")


@pytest.fixture(scope="module")
async def mx(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Mx]:
    """The fleet's MX, serving two local domains, one of them an IDN."""
    home = tmp_path_factory.mktemp("tricks")
    async with Fleet(
        database_url=f"sqlite:///{home / 'mailfleet.db'}",
        home=home,
        smtp_port=0,
        smtp_hostname="mx.example.com",
        poll_interval=0.05,
    ) as fleet:
        fleet.bind(Desk)
        await fleet.add_domain("example.com")
        await fleet.add_domain("exämple.com")
        grants = {}
        for address in (LOCAL, "desk@exämple.com"):
            grant = await fleet.provision(address, agent=Desk)
            grants[grant.address] = grant.id
        assert set(grants) == {LOCAL, IDN}
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_until(lambda: fleet.smtp_port is not None)
            assert fleet.smtp_port is not None
            yield Mx(fleet, fleet.smtp_port, grants)
            tg.cancel_scope.cancel()


def swaks_transcript(swaks: str, port: int, to: str | bytes) -> list[str]:
    """swaks sending one message to ``to``; its transcript, one line per command or reply."""
    to_arg = to.encode() if isinstance(to, str) else to
    done = subprocess.run(
        [
            swaks,
            *("--server", f"127.0.0.1:{port}", "--ehlo", "client.example.org"),
            *("--from", "ada@example.org", "--h-Subject", "relay trick", "--timeout", "10"),
            b"--to",
            to_arg,
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return done.stdout.decode("utf-8", "backslashreplace").splitlines()


def rcpt_reply(transcript: list[str]) -> str:
    """The server's reply to RCPT, as swaks shows it (``<-`` or ``<**``, one line)."""
    for index, line in enumerate(transcript):
        if line.startswith(" -> RCPT TO:") or line.startswith("-> RCPT TO:"):
            reply = transcript[index + 1]
            marker, _, text = reply.strip().partition(" ")
            assert marker in {"<-", "<**"}, transcript
            return text.strip()
    raise AssertionError("swaks sent no RCPT:\n" + "\n".join(transcript))


@pytest.mark.parametrize("name", list(TRICKS))
async def test_no_relay_trick_relays(name: str, mx: Mx, swaks: str) -> None:
    trick = TRICKS[name]
    before = await mx.stored()
    transcript = await anyio.to_thread.run_sync(swaks_transcript, swaks, mx.port, trick.to)
    reply = rcpt_reply(transcript)
    assert reply.startswith(trick.reply + " "), "\n".join(transcript)
    assert trick.words.lower() in reply.lower()
    after = await mx.stored()
    if trick.grant is None:
        assert after == before, "a refused recipient got a message stored"
        assert not any(line.startswith(" -> DATA") for line in transcript)
    else:
        assert after == [*before, mx.grants[trick.grant]], "\n".join(transcript)
        assert any(
            line.strip().startswith("<-  250 Message accepted") or "queued as" in line
            for line in transcript
        ), "\n".join(transcript)
    assert await mx.outbound() == 0, "something was queued to go out"


# -- over a socket: NUL, and the Unicode forms with SMTPUTF8 ------------------------------


def converse(port: int, commands: list[bytes]) -> list[bytes]:
    """Send each command line and read its one-line reply (EHLO's last line)."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # the greeting
        for command in commands:
            sock.sendall(command + b"\r\n")
            while (line := stream.readline())[3:4] == b"-":
                pass
            replies.append(line.rstrip(b"\r\n"))
    return replies


NUL_CASES = [
    (b"<desk\x00@example.com>", SYNTAX),
    (b"<desk@example.com\x00.foreign.example>", SYNTAX),
    (b"<desk@foreign.example\x00@example.com>", SYNTAX),
    (b"<\x00desk@example.com>", SYNTAX),
    (b'<"desk\x00"@example.com>', SYNTAX),
    (b"<desk@example.com>\x00", "501 5.5.4"),  # in the parameters
    (b"<desk@example.com> \x00SIZE=1", "501 5.5.4"),
]


@pytest.mark.parametrize(("path", "reply"), NUL_CASES, ids=repr)
async def test_nul_in_an_address_is_bad_syntax_and_the_session_goes_on(
    path: bytes, reply: str, mx: Mx
) -> None:
    before = await mx.stored()
    commands = [b"EHLO client.example.org", b"MAIL FROM:<ada@example.org>", b"RCPT TO:" + path]
    replies = await anyio.to_thread.run_sync(converse, mx.port, [*commands, b"NOOP"])
    assert replies[2].startswith(reply.encode() + b" "), replies
    assert b"\x00" not in replies[2]
    assert replies[3] == b"250 OK"
    assert await mx.stored() == before


async def test_nul_and_8_bit_in_mail_from_are_bad_syntax(mx: Mx) -> None:
    bad = [b"<ada\x00@example.org>", b"<ada@example.org\x00>", b"<ad\xe9@example.org>"]
    commands = [b"EHLO client.example.org", *(b"MAIL FROM:" + path for path in bad)]
    commands += [b"MAIL FROM:<ad\xc3\xa9@example.org>", b"NOOP"]  # UTF-8, no SMTPUTF8
    replies = await anyio.to_thread.run_sync(converse, mx.port, commands)
    assert replies[1:4] == [b"501 5.1.7 Bad sender address syntax"] * 3
    assert replies[4].startswith(b"553 5.6.7 ")
    assert replies[5] == b"250 OK"


SMTPUTF8_CASES = [
    ("desk@exämple.com", ACCEPTED),  # the same address as its punycode form
    ("DESK@EXÄMPLE.COM", ACCEPTED),
    ("desk@bücher.example", RELAY_DENIED),
    ("desk%bücher.example@exämple.com", ROUTE_DENIED),
    ("désk@exämple.com", UNKNOWN),
]


@pytest.mark.parametrize(("address", "reply"), SMTPUTF8_CASES)
async def test_unicode_forms_with_smtputf8(address: str, reply: str, mx: Mx) -> None:
    before = await mx.stored()
    commands = [
        b"EHLO client.example.org",
        b"MAIL FROM:<ada@example.org> SMTPUTF8",
        f"RCPT TO:<{address}>".encode(),
        b"RSET",
    ]
    replies = await anyio.to_thread.run_sync(converse, mx.port, commands)
    assert replies[1] == b"250 2.1.0 OK"
    assert replies[2].decode().startswith(reply + " "), replies
    assert await mx.stored() == before  # no DATA was sent
    assert await mx.outbound() == 0
