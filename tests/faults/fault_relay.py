"""A misbehaving SMTP relay for the fault tests: raw asyncio sockets on 127.0.0.1.

aiosmtpd answers every command as a well-behaved server must; this peer speaks
just enough SMTP (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) to be a relay, and
misbehaves on cue. ``faults`` is a script: at each point of a session where a
fault could strike (the greeting, MAIL, DATA, the data, the end of data) the
peer looks at the first fault still in the list and, when it belongs to that
point, takes it off the list and commits it. A fault is thus committed once;
after the script runs out the peer behaves.

What it tells the tests: ``accepted``, the messages it answered ``250`` to (the
only ones a sender may count as sent), ``unanswered``, the messages it read to
their end and never answered, ``dropped``, the transactions it cut mid-data,
and ``connections``. It can be stopped and started again on the same port
(connections refused meanwhile), and ``on_end_of_data`` / ``after_250`` hooks
let a test act at the exact moment around the relay's ``250`` (freeze and kill
the sender's process).
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

__all__ = ["Fault", "FaultyRelay", "Message", "faulty_relay"]


class Fault(enum.Enum):
    """One misbehaviour, and the point of the session where it strikes."""

    GREETING_421 = ("greeting", "greet with 421 4.3.2 and close")
    GREETING_STALL = ("greeting", "accept the connection and never greet")
    MAIL_421 = ("mail", "answer MAIL with 421 4.3.2 and close")
    DATA_421 = ("data", "answer DATA with 421 4.3.2 and close")
    DROP_MID_DATA = ("content", "read the message's first line, then reset the connection")
    STALL_AFTER_DATA = ("end", "read the whole message and its end-of-data, never answer")
    CLOSE_AFTER_250 = ("end", "accept the message (250), then close the connection at once")

    @property
    def point(self) -> str:
        """Where in a session the fault strikes."""
        return self.value[0]


@dataclass(frozen=True)
class Message:
    """A message as the peer read it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    at: float
    """When its end-of-data arrived (``time.monotonic()``)."""

    def header(self, name: str) -> str | None:
        """The first header field ``name`` of the message, unfolded, or None."""
        head = self.data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
        prefix = name.lower().encode() + b":"
        for line in head.split(b"\r\n"):
            if line.lower().startswith(prefix):
                return line[len(prefix) :].strip().decode()
        return None


@dataclass
class FaultyRelay:
    """The peer's script and its record; see the module's docstring."""

    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    accepted: list[Message] = field(default_factory=list)
    unanswered: list[Message] = field(default_factory=list)
    dropped: int = 0
    connections: int = 0
    on_end_of_data: Callable[[Message], None] | None = None
    """Called when a message's end-of-data arrived, before the peer answers 250."""
    after_250: Callable[[Message], None] | None = None
    """Called once the 250 for a message was written and flushed."""
    _server: asyncio.Server | None = None
    _sessions: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    # -- listening --------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``port`` (a free one the first time when it is 0)."""
        self._server = await asyncio.start_server(self._session, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every open session: connections are refused."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # the session's next read ends it
        while self._sessions:
            await asyncio.wait(list(self._sessions))

    def accepted_ids(self) -> list[str | None]:
        """The Message-ID of each accepted message, in the order accepted."""
        return [m.header("Message-ID") for m in self.accepted]

    # -- one session ------------------------------------------------------------------

    def _take(self, point: str) -> Fault | None:
        if self.faults and self.faults[0].point == point:
            return self.faults.pop(0)
        return None

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._sessions.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        async def close_with_421() -> None:
            await reply("421 4.3.2 Service shutting down, closing transmission channel")
            writer.close()

        fault = self._take("greeting")
        if fault is Fault.GREETING_STALL:
            await reader.read()  # until the client gives up and closes
            return
        if fault is Fault.GREETING_421:
            await close_with_421()
            return
        await reply("220 relay.test ESMTP faulty")
        mail_from: str | None = None
        rcpt_tos: list[str] = []
        while line := await reader.readline():
            verb, _, argument = line.decode("utf-8", "replace").strip().partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                await reply("250-relay.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 52428800")
            elif verb == "MAIL":
                if self._take("mail") is Fault.MAIL_421:
                    await close_with_421()
                    return
                mail_from, rcpt_tos = _path(argument), []
                await reply("250 2.1.0 Ok")
            elif verb == "RCPT" and mail_from is not None:
                rcpt_tos.append(_path(argument))
                await reply("250 2.1.5 Ok")
            elif verb == "DATA" and rcpt_tos:
                if self._take("data") is Fault.DATA_421:
                    await close_with_421()
                    return
                await reply("354 End data with <CR><LF>.<CR><LF>")
                if not await self._data(reader, writer, mail_from or "", rcpt_tos):
                    return
                mail_from, rcpt_tos = None, []
            elif verb in ("RSET", "NOOP"):
                mail_from, rcpt_tos = (None, []) if verb == "RSET" else (mail_from, rcpt_tos)
                await reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                await reply("221 2.0.0 Bye")
                return
            else:
                await reply("503 5.5.1 Bad sequence of commands")

    async def _data(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        mail_from: str,
        rcpt_tos: list[str],
    ) -> bool:
        """Read one message and answer it; False when the session is over."""
        lines: list[bytes] = []
        if self._take("content") is Fault.DROP_MID_DATA:
            await reader.readline()
            self.dropped += 1
            writer.transport.abort()  # a reset, not a goodbye
            return False
        while (line := await reader.readline()) != b".\r\n":
            if not line:
                return False  # the client went away mid-data
            lines.append(line[1:] if line.startswith(b".") else line)
        message = Message(mail_from, tuple(rcpt_tos), b"".join(lines), time.monotonic())
        fault = self._take("end")
        if fault is Fault.STALL_AFTER_DATA:
            self.unanswered.append(message)
            await reader.read()
            return False
        if self.on_end_of_data is not None:
            self.on_end_of_data(message)
        self.accepted.append(message)
        writer.write(b"250 2.0.0 Ok: queued as " + str(len(self.accepted)).encode() + b"\r\n")
        await writer.drain()
        if self.after_250 is not None:
            self.after_250(message)
        if fault is Fault.CLOSE_AFTER_250:
            writer.close()
            return False
        return True


def _path(argument: str) -> str:
    """The address of ``FROM:<a@b> SIZE=1`` or ``TO:<a@b>``."""
    _, _, rest = argument.partition(":")
    return rest.strip().split(" ", 1)[0].strip("<>")


@asynccontextmanager
async def faulty_relay(*faults: Fault, listening: bool = True) -> AsyncIterator[FaultyRelay]:
    """A :class:`FaultyRelay` on a free loopback port for the block (``listening``
    False: the port is reserved but refuses connections until ``start()``)."""
    relay = FaultyRelay(faults=list(faults))
    await relay.start()
    if not listening:
        await relay.stop()
    try:
        yield relay
    finally:
        await relay.stop()
