"""Hostile SMTP sessions: a hypothesis state machine against the real MX over a real socket.

One fleet serves the MX for the whole module (on SQLite, and on PostgreSQL),
in an event loop of its own thread; each hypothesis example is one or more
raw TCP sessions driven by random sequences of EHLO/HELO, MAIL FROM (valid,
invalid, with parameters), RCPT TO (the local grant, an unknown local part,
foreign domains and relay tricks), DATA with random bodies (bare LF and CR,
dot-stuffing edge cases, NUL and 8-bit bytes, over-long lines, oversized),
RSET, NOOP, VRFY, garbage, over-long lines and NUL bytes. The invariants:

- every reply is a well-formed SMTP reply (RFC 5321 4.2: ``NNN`` then ``-``
  or space on every line, one code throughout) and comes within a timeout;
- its code is one the command may get in the session's state (no 250 to
  MAIL before HELO, to a nested MAIL, to DATA without a recipient...);
- a foreign recipient is never accepted (no relaying), and nothing ever
  reaches the outbox;
- DATA to the local grant is answered 250 (stored) or a documented refusal
  (552 too big, 500 line too long), never a 4xx store failure;
- after any sequence, ``RSET`` then ``NOOP`` still answer 250, and the MX
  logs no error.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import anyio
import pytest
import sqlalchemy as sa
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dnsserver import DnsServer
from mailfleet import Fleet
from mailfleet.store.tables import metadata
from support import wait_until

settings.register_profile(
    "fuzz-smtp",
    max_examples=60,
    stateful_step_count=30,
    deadline=None,  # each reply has its own timeout (REPLY_SECONDS)
    database=None,  # no example database in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("fuzz-smtp")
"""This module's profile (applied to its tests only; ``--hypothesis-profile=fuzz-smtp``
makes it every test's)."""
REPLY_SECONDS = 15.0
"""The longest the MX may take to answer one command (a DATA commit included)."""
LOCAL = "desk@example.com"
MAX_MESSAGE_BYTES = 20_000
"""The grant's limit: bodies are drawn up to about twice as large."""
REPLY_LINE = re.compile(rb"([2-5][0-5]\d)([ -])([\t\x20-\x7e\x80-\xff]*)\r\n")
"""A reply line: its text printable (RFC 5321 4.2; UTF-8 allowed, RFC 6531 3.7.4)."""
MAX_ATTACHMENT_BYTES = 5_000
LOGGERS = ("mailfleet", "mail.log")
"""mailfleet's loggers and aiosmtpd's: an ERROR from either fails the module."""


# -- the MX, once per module ------------------------------------------------------------


@dataclass
class Served:
    fleet: Fleet
    portal: BlockingPortal
    port: int
    errors: list[logging.LogRecord] = field(default_factory=list)


class _Errors(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@asynccontextmanager
async def _serving(url: str, home: Path, dns: str) -> AsyncIterator[Fleet]:
    async with Fleet(
        database_url=url,
        home=home,
        smtp_port=0,
        poll_interval=0.05,
        dns_nameservers=[dns],
        dns_timeout=0.5,
    ) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision(LOCAL)
        await fleet.update_policy(
            "default",
            {"max_message_bytes": MAX_MESSAGE_BYTES, "max_attachment_bytes": MAX_ATTACHMENT_BYTES},
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_until(lambda: fleet.smtp_port is not None)
            yield fleet
            tg.cancel_scope.cancel()


def _empty_postgres(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL database, emptied (other modules used it before)."""
    url: sa.URL = request.getfixturevalue("postgres_server")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            present = set(sa.inspect(conn).get_table_names())
            names = [f'"{t.name}"' for t in metadata.sorted_tables if t.name in present]
            if names:
                conn.exec_driver_sql(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()
    return url.render_as_string(hide_password=False)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The fleet's MX on loopback, for every test of the module on one backend."""
    home = tmp_path_factory.mktemp(f"fuzz-smtp-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'mailfleet.db'}"
    else:
        url = _empty_postgres(request)
    errors: list[logging.LogRecord] = []
    handler = _Errors(errors)
    for name in LOGGERS:
        logging.getLogger(name).addHandler(handler)
    try:
        with (
            DnsServer() as dns,
            start_blocking_portal("asyncio") as portal,
            portal.wrap_async_context_manager(_serving(url, home, dns.address)) as fleet,
        ):
            assert fleet.smtp_port is not None
            yield Served(fleet, portal, fleet.smtp_port, errors)
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)


# -- a raw client -------------------------------------------------------------------------


class Closed(Exception):
    """The MX closed the connection (after a 421, or a 502 goodbye)."""


class Client:
    """One TCP session, bytes in and replies out, every reply checked for form."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=REPLY_SECONDS)
        self.buffer = b""
        code, _ = self.reply()
        assert code == 220

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                pytest.fail(f"no reply within {REPLY_SECONDS} s (the MX hangs)")
            if not chunk:
                if self.buffer:
                    pytest.fail(f"a reply line without CRLF: {self.buffer!r}")
                raise Closed
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def reply(self) -> tuple[int, bytes]:
        """One reply, all its lines: well-formed (RFC 5321 4.2), one code throughout."""
        lines = []
        while True:
            line = self._line()
            match = REPLY_LINE.fullmatch(line)
            assert match is not None, f"malformed reply line {line!r}"
            match[3].decode("utf-8")
            lines.append(match)
            if match[2] == b" ":
                break
        codes = {m[1] for m in lines}
        assert len(codes) == 1, f"one reply, several codes: {lines}"
        return int(lines[0][1]), b"\n".join(m[3] for m in lines)

    def command(self, line: bytes) -> tuple[int, bytes]:
        self.send(line + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()


# -- what the rules send --------------------------------------------------------------------

FOREIGN = [
    b"someone@elsewhere.org",
    b"desk@example.com.elsewhere.org",
    b"desk%elsewhere.org@example.com",  # the percent hack
    b"@example.com:desk@elsewhere.org",  # a source route
    b"elsewhere.org!desk@example.com",  # a bang path
    b"desk@elsewhere.org@example.com",
    b'"desk@elsewhere.org"@example.com',
    b"desk@[127.0.0.1]",
    b"desk@EXAMPLE.COM.",
    b"desk@xn--exmple-cua.com",
    b"desk@ex\xc3\xa4mple.com",
    b"desk\x00@elsewhere.org",
    b"desk@ex\xe4mple.com",  # not UTF-8
    b"\xff@elsewhere.org",
    b"desk\r@elsewhere.org",
]
UNKNOWN = [b"nobody@example.com", b"desk+tag@example.com", b"Desk.Other@Example.com"]
SENDERS = [
    b"<ada@example.org>",
    b"<>",
    b"ada@example.org",
    b"<ada@example.org> SIZE=100",
    b"<ada@example.org> SIZE=999999999",
    b"<ada@example.org> BODY=8BITMIME SMTPUTF8",
    b"<ada@example.org> BODY=BINARYMIME",
    b"<ada@example.org> FOO=BAR",
    b"<ada@example.org> SIZE=x",
    b"<@relay.example:ada@example.org>",
    b"<ada@[192.0.2.1]>",
    b'<"a b"@example.org>',
    b"<caf\xc3\xa9@example.org>",
    b"<ada@example.org",
    b"<a\x00@example.org>",
    b"<" + b"a" * 300 + b"@example.org>",
    b"",
]
GARBAGE = st.one_of(
    st.sampled_from(
        [
            b"",
            b" ",
            b"\x00",
            b"NOOP\x00",
            b"\xff\xfe",
            b"MAIL",
            b"RCPT",
            b"DATA x",
            b"HELP",
            b"EXPN staff",
            b"ETRN example.com",
            b"AUTH PLAIN AGFkYQBzZWNyZXQ=",
            b"STARTTLS",
            b"BDAT 10 LAST",
            b"TURN",
            b"mail from:",  # lower case, no path
            b"NOOP\rRSET",
        ]
    ),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)
LINE_BODY = st.one_of(
    st.sampled_from(
        [
            b".",
            b"..",
            b". ",
            b".\r",
            b"\r.",
            b"\n.\n",
            b"\n.\r",
            b"From: a@example.org",
            b"Subject: =?utf-8?b?AA==?= \x00",
            b"Content-Type: multipart/mixed; boundary=x",
            b"--x",
            b"\x00\x00",
            b"\xff\xfe\xfd",
            b"x" * 1200,  # past the 1000-character line limit
        ]
    ),
    st.binary(max_size=60).map(lambda b: b.replace(b"\r\n", b"\n")),
    st.integers(1, 40_000).map(lambda n: b"y" * (n % 999)),
)


HEADER = st.sampled_from(
    [
        b"Subject: a\x00b",  # NUL: PostgreSQL text refuses it
        b"Subject: =?utf-8?b?AA==?= =?utf-16?b?2AA=?=",  # NUL and a lone surrogate, encoded
        b"Reply-To: " + b"(" * 300 + b"a@example.org",  # the stdlib's address parser recurses
        b"Cc: " + b"\r\n ".join([b"<a@example.org>, " * 40] * 30),  # a long folded list
        b"Message-ID: <\xff\xfe@example.org>",
        b"In-Reply-To: <" + b"x" * 900 + b">",
        b"Content-Type: multipart/mixed; boundary=" + b"q" * 900,
        b"Auto-Submitted: auto-replied",
        b"X-Failed-Recipients: desk@example.com",
    ]
)


def dot_stuffed(lines: list[bytes]) -> bytes:
    """The DATA transfer of ``lines`` (RFC 5321 4.5.2), terminator included."""
    body = b"\r\n".join(lines)
    stuffed = b"\r\n".join(
        b"." + line if line.startswith(b".") else line for line in body.split(b"\r\n")
    )
    return stuffed + b"\r\n.\r\n"


# -- the machine ------------------------------------------------------------------------------


class SmtpSession(RuleBasedStateMachine):
    """One hostile client; the model of its session decides which replies are allowed."""

    served: Served
    seen: ClassVar[Counter[str]] = Counter()
    """Replies by rule and code over the run (``"data 250"``): proof that it went deep."""

    def __init__(self) -> None:
        super().__init__()
        self.client = Client(self.served.port)
        self.greeted = False
        self.extended = False
        self.mail = False
        self.rcpts = 0

    def _reconnect(self) -> None:
        self.client.close()
        self.client = Client(self.served.port)
        self.greeted = self.extended = self.mail = False
        self.rcpts = 0

    def _send(self, line: bytes) -> tuple[int, bytes] | None:
        """A command and its reply; None (and a fresh session) when the MX hung up."""
        try:
            code, text = self.client.command(line)
        except Closed:
            self._reconnect()
            return None
        verb = line.split(b" ", 1)[0].split(b":", 1)[0].decode("ascii", "replace").lower()
        self.seen[f"{verb} {code}"] += 1
        if code == 421 or b"goodbye" in text:  # the MX closes the session after these
            self._reconnect()
            return None
        return code, text

    @initialize()
    def start(self) -> None:
        assert self.client is not None

    @rule(
        name=st.sampled_from([b"client.example.org", b"[192.0.2.1]", b"", b"x" * 300, b"\xc3\xa9"])
    )
    def ehlo(self, name: bytes) -> None:
        result = self._send(b"EHLO " + name if name else b"EHLO")
        if result is None:
            return
        code, text = result
        assert code in (250, 501), (code, text)
        if code == 250:
            assert b"AUTH" not in text  # never offered in the clear
            self.greeted = self.extended = True
            self.mail, self.rcpts = False, 0

    @rule(name=st.sampled_from([b"client.example.org", b""]))
    def helo(self, name: bytes) -> None:
        result = self._send(b"HELO " + name if name else b"HELO")
        if result is None:
            return
        code, _ = result
        assert code in (250, 501)
        if code == 250:
            self.greeted, self.extended = True, False
            self.mail, self.rcpts = False, 0

    @rule(sender=st.sampled_from(SENDERS))
    def mail_from(self, sender: bytes) -> None:
        result = self._send(b"MAIL FROM:" + sender)
        if result is None:
            return
        code, text = result
        if not self.greeted:
            assert code == 503, (code, text)
        elif self.mail:
            assert code in (503, 501, 555, 552), (code, text)
        else:
            assert code in (250, 501, 552, 555, 553), (code, text)
        if code == 250:
            assert self.greeted
            assert not self.mail
            self.mail = True

    @rule(extended=st.booleans())
    def begin(self, extended: bool) -> None:
        """A valid start of a transaction, from wherever the session is: so that the random
        steps after it reach RCPT and DATA."""
        if not self.greeted:
            self.ehlo(b"client.example.org") if extended else self.helo(b"client.example.org")
        if self.greeted and not self.mail:
            self.mail_from(b"<ada@example.org>")
        if self.mail:
            self.rcpt_local(LOCAL.encode())

    @rule(recipient=st.sampled_from([LOCAL.encode(), b"<" + LOCAL.encode() + b">"]))
    def rcpt_local(self, recipient: bytes) -> None:
        wrapped = recipient if recipient.startswith(b"<") else b"<" + recipient + b">"
        result = self._send(b"RCPT TO:" + wrapped)
        if result is None:
            return
        code, text = result
        if not (self.greeted and self.mail):
            assert code == 503, (code, text)
            return
        assert code in (250, 452), (code, text)  # 452: too many recipients
        if code == 250:
            self.rcpts += 1

    @rule(recipient=st.sampled_from(FOREIGN + UNKNOWN), bracket=st.booleans())
    def rcpt_not_ours(self, recipient: bytes, bracket: bool) -> None:
        result = self._send(b"RCPT TO:" + (b"<" + recipient + b">" if bracket else recipient))
        if result is None:
            return
        code, text = result
        assert code not in (250, 251), f"relayed or accepted {recipient!r}: {code} {text!r}"
        self.seen[f"refused {code}"] += 1
        if self.greeted and self.mail:
            assert code in (550, 501, 553, 452), (code, text)
        else:
            assert code in (503, 501), (code, text)

    @rule(recipient=st.sampled_from(FOREIGN + UNKNOWN), extended=st.booleans())
    def relay_attempt(self, recipient: bytes, extended: bool) -> None:
        """A foreign or unknown recipient inside a transaction, the case that matters most:
        reached on purpose, not only when the random steps happen to have begun one."""
        self.begin(extended)
        self.rcpt_not_ours(recipient, True)

    @rule(
        headers=st.lists(HEADER, max_size=3),
        lines=st.lists(LINE_BODY, max_size=12),
        padding=st.integers(0, 2 * MAX_MESSAGE_BYTES),
    )
    def data(self, headers: list[bytes], lines: list[bytes], padding: int) -> None:
        result = self._send(b"DATA")
        if result is None:
            return
        code, text = result
        if not (self.greeted and self.rcpts):
            assert code in (503, 554), (code, text)
            return
        assert code == 354, (code, text)
        head = [b"From: Ada <ada@example.org>", b"To: " + LOCAL.encode(), *headers, b""]
        body = head + lines + [b"z" * 70] * (padding // 72)
        self.client.send(dot_stuffed(body))
        try:
            code, text = self.client.reply()
        except Closed:
            pytest.fail("the MX hung up after DATA")
        long_line = any(len(line) > 998 for line in b"\r\n".join(body).split(b"\r\n"))
        # stored, or too big (the message or an attachment), or an attachment type refused
        allowed = {250, 552, 554} | ({500} if long_line else set())
        assert code in allowed, (code, text)
        self.seen[f"message {code}"] += 1
        self.mail, self.rcpts = False, 0

    @rule()
    def rset(self) -> None:
        result = self._send(b"RSET")
        if result is not None:
            assert result[0] == 250, result
            self.mail, self.rcpts = False, 0

    @rule()
    def noop(self) -> None:
        result = self._send(b"NOOP")
        if result is not None:
            assert result[0] == 250, result

    @rule(arg=st.sampled_from([b"", b" desk", b" desk@example.com", b" nobody@elsewhere.org"]))
    def vrfy(self, arg: bytes) -> None:
        result = self._send(b"VRFY" + arg)
        if result is not None:
            assert result[0] in (252, 501, 502, 503), result  # never confirms a mailbox

    @rule(line=GARBAGE)
    def garbage(self, line: bytes) -> None:
        result = self._send(line)
        if result is not None:
            code, text = result
            assert code >= 400 or line.upper().startswith((b"NOOP", b"HELP")), (line, code, text)

    @rule(size=st.integers(513, 20_000), nul=st.booleans())
    def overlong(self, size: int, nul: bool) -> None:
        line = b"NOOP " + (b"\x00" if nul else b"a") * size
        result = self._send(line)
        if result is not None:
            assert result[0] == 500, result

    @precondition(lambda self: self.mail)
    @rule()
    def transaction_state(self) -> None:
        """A transaction in progress: a second MAIL is refused."""
        result = self._send(b"MAIL FROM:<again@example.org>")
        if result is not None:
            assert result[0] == 503, result

    def teardown(self) -> None:
        try:
            for command in (b"RSET", b"NOOP"):
                result = self._send(command)
                if result is None:  # a session the MX closed: a new one must work
                    result = self._send(command)
                assert result is not None
                assert result[0] == 250, (command, result)
        finally:
            self.client.close()


def test_hostile_smtp_sessions(served: Served) -> None:
    SmtpSession.served = served
    SmtpSession.seen.clear()
    run_state_machine_as_test(SmtpSession, settings=FUZZ)
    seen = SmtpSession.seen
    print(sorted(seen.items()))
    # the sessions went deep: messages stored, recipients refused, transactions begun
    assert seen["message 250"] > 0
    assert seen["refused 550"] > 0
    assert seen["mail 250"] > 0
    assert served.portal.call(served.fleet.outbox_count) == 0  # nothing was relayed
    assert not served.errors, [r.getMessage() for r in served.errors]


def test_the_mx_still_serves_after_the_fuzzing(served: Served) -> None:
    """A plain session at the end: still accepted, stored and answered 250."""
    client = Client(served.port)
    try:
        for line, expected in [
            (b"EHLO client.example.org", 250),
            (b"MAIL FROM:<ada@example.org>", 250),
            (b"RCPT TO:<someone@elsewhere.org>", 550),
            (b"RCPT TO:<desk@example.com>", 250),
            (b"DATA", 354),
        ]:
            assert client.command(line)[0] == expected, line
        marker = secrets.token_hex(8).encode()
        client.send(dot_stuffed([b"Subject: " + marker, b"", b".leading dot", b"end"]))
        code, text = client.reply()
        assert code == 250, text
        assert client.command(b"QUIT")[0] == 221
    finally:
        client.close()
    events = served.portal.call(lambda: served.fleet.events(type="message.received"))
    assert events
    assert not served.errors, [r.getMessage() for r in served.errors]


def test_a_file_name_cannot_forge_a_reply(served: Served) -> None:
    """A refusal that names an attachment stays one reply, whatever the name holds.

    The name is decoded from RFC 2231 (``%0D%0A`` is CRLF): written into the
    552 as is, it ended that reply early and started a forged ``250``, which
    the client took as the answer to its next command.
    """
    client = Client(served.port)
    try:
        for line in (b"EHLO client.example.org", b"MAIL FROM:<ada@example.org>"):
            assert client.command(line)[0] == 250
        assert client.command(b"RCPT TO:<desk@example.com>")[0] == 250
        assert client.command(b"DATA")[0] == 354
        content = [b"A" * 76] * (MAX_ATTACHMENT_BYTES // 50)  # too big once decoded
        client.send(
            dot_stuffed(
                [
                    b"From: a@example.org",
                    b"Subject: forged",
                    b'Content-Type: multipart/mixed; boundary="b"',
                    b"",
                    b"--b",
                    b"Content-Type: text/plain",
                    b"",
                    b"hello",
                    b"--b",
                    b"Content-Type: application/octet-stream",
                    b"Content-Transfer-Encoding: base64",
                    b"Content-Disposition: attachment; filename*=utf-8''a%0D%0A250%20forged%00",
                    b"",
                    *content,
                    b"--b--",
                ]
            )
        )
        code, text = client.reply()
        assert code == 552, text
        assert b"Attachment a??250 forged\xef\xbf\xbd is too big" in text  # NUL: U+FFFD
        assert client.command(b"RSET") == (250, b"OK")
        assert client.command(b"NOOP") == (250, b"OK")
        assert client.buffer == b""
    finally:
        client.close()
