"""One IMAP connection over aioimaplib: connect, TLS, log in, select, search, fetch, IDLE.

aioimaplib is untyped and asyncio-only; this module is the one place that
touches it. Every command is raced against the connection's loss, so a
server that goes away is noticed at once, not after a command timeout.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from aioimaplib import aioimaplib  # type: ignore[import-untyped]

from .config import ImapConfig, Tls
from .errors import ImapConnectionLost, ImapError, ImapRefused

__all__ = ["Session", "encode_mailbox", "open_session", "parse_fetch", "secret_forms"]

T = TypeVar("T")
log = logging.getLogger("mailfleet.imap")

_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_FETCH_START = re.compile(rb"^\d+ FETCH \(")
_FETCH_UID = re.compile(rb"\bUID (\d+)")
_FETCH_BODY = re.compile(rb"BODY\[\] \{\d+\}$")
_NEWS = re.compile(rb"^\d+ (?:EXISTS|RECENT)")
"""What a server pushes in IDLE when mail arrives. RECENT counts too: a message
that arrived during the UID SEARCH before IDLE is announced by an EXISTS in
that command's answer, which aioimaplib drops as an unsolicited response;
Dovecot and other IMAP4rev1 servers then say only ``* 1 RECENT`` in IDLE."""


@asynccontextmanager
async def open_session(config: ImapConfig) -> AsyncIterator[Session]:
    """Connect, protect, authenticate and select ``config.mailbox``; close on exit."""
    session = Session(config)
    try:
        await session._open()
        yield session
    finally:
        await session._aclose()


class Session:
    """An authenticated connection with the mailbox selected (use :func:`open_session`)."""

    def __init__(self, config: ImapConfig) -> None:
        self._config = config
        self._lost = anyio.Event()
        self._client: Any = None
        self.uidvalidity = 0
        """The mailbox's UIDVALIDITY, read at SELECT."""

    @property
    def capabilities(self) -> frozenset[str]:
        """What the server announced after authentication."""
        return frozenset(self._client.protocol.capabilities) if self._client else frozenset()

    @property
    def can_idle(self) -> bool:
        """Whether the server offers IDLE (RFC 2177)."""
        return "IDLE" in self.capabilities

    # -- opening and closing -------------------------------------------------------

    async def _open(self) -> None:
        config = self._config
        context = _tls_context(config) if config.tls is not Tls.NONE else None
        self._client = aioimaplib.IMAP4(
            host=config.host,
            port=config.effective_port,
            timeout=config.timeout,
            conn_lost_cb=self._connection_lost,
            ssl_context=context if config.tls is Tls.IMPLICIT else None,
        )
        await self._guard(self._client.wait_hello_from_server)
        if config.tls is Tls.STARTTLS:
            assert context is not None
            await self._starttls(context)
        await self._authenticate()
        await self._select()

    def _connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    async def _starttls(self, context: ssl.SSLContext) -> None:
        protocol = self._client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError("the server does not offer STARTTLS, which tls='starttls' requires")
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        _check(await self._command(lambda: protocol.execute(command)), "STARTTLS")
        loop = asyncio.get_running_loop()
        protocol.transport = await self._command(
            lambda: loop.start_tls(
                protocol.transport, protocol, context, server_hostname=self._config.host
            )
        )
        await self._capability()  # what was announced in clear no longer counts

    async def _authenticate(self) -> None:
        config = self._config
        protocol = self._client.protocol
        password = config.secret()
        if {"AUTH=PLAIN", "SASL-IR"} <= protocol.capabilities:
            scrub = base64.b64encode(f"\0{config.username}\0{password}".encode()).decode()
            arguments: tuple[str, ...] = ("PLAIN", scrub)
            name = "AUTHENTICATE"
        elif "LOGINDISABLED" in protocol.capabilities:
            raise ImapError("the server refuses LOGIN on this connection (LOGINDISABLED)")
        else:
            scrub = aioimaplib.quoted(password)
            arguments = (aioimaplib.quoted(config.username), scrub)
            name = "LOGIN"
        command = aioimaplib.Command(name, protocol.new_tag(), *arguments, loop=protocol.loop)
        # scrub: aioimaplib's debug log shows the command with the secret masked.
        response = await self._command(lambda: protocol.execute(command, scrub=scrub))
        _check(response, f"{name} as {config.username!r}")
        protocol.state = aioimaplib.AUTH
        await self._capability()

    async def _capability(self) -> None:
        await self._command(self._client.protocol.capability)

    async def _select(self) -> None:
        mailbox = aioimaplib.quoted(encode_mailbox(self._config.mailbox))
        response = await self._guard(lambda: self._client.select(mailbox))
        _check(response, f"SELECT {self._config.mailbox!r}")
        for line in response.lines:
            found = _UIDVALIDITY.search(bytes(line))
            if found:
                self.uidvalidity = int(found.group(1))
                return
        raise ImapError(f"the server sent no UIDVALIDITY for {self._config.mailbox!r}")

    async def reselect(self) -> None:
        """SELECT the mailbox again and read its UIDVALIDITY afresh.

        A session can go on seeing a mailbox that another one deleted and
        created again (Dovecot does): selecting it again shows the new one.
        """
        await self._select()

    async def _aclose(self) -> None:
        client = self._client
        if client is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(min(2.0, self._config.timeout)):
            if not self._lost.is_set() and client.get_state() in {
                aioimaplib.AUTH,
                aioimaplib.SELECTED,
            }:
                try:
                    if client.has_pending_idle():
                        client.idle_done()
                    await self._guard(client.logout)
                except Exception as exc:  # best effort: the connection is closed below anyway
                    log.debug("LOGOUT failed before closing: %s", type(exc).__name__)
        transport = client.protocol.transport
        if transport is not None:
            transport.close()
        if client._idle_waiter is not None:
            client._idle_waiter.cancel()
        for task in [client._client_task, *client.tasks, *client.protocol.tasks]:
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved: nothing left for asyncio to complain about
            else:
                task.cancel()

    # -- commands --------------------------------------------------------------------

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()``, raising :class:`ImapConnectionLost` as soon as the connection drops."""
        if self._lost.is_set():
            raise ImapConnectionLost("the connection is closed")
        lost = False
        outcome: list[T] = []
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal lost
                await self._lost.wait()
                lost = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            try:
                outcome.append(await call())
            except Exception as exc:
                failure = exc
            tg.cancel_scope.cancel()
        if lost and not outcome:
            raise ImapConnectionLost("the server closed the connection") from failure
        if failure is not None:
            raise failure
        return outcome[0]

    async def _command(self, call: Callable[[], Awaitable[T]]) -> T:
        """:meth:`_guard` with the command timeout (for calls aioimaplib does not time)."""
        timeout = self._config.timeout

        async def timed() -> T:
            with anyio.fail_after(timeout):
                return await call()

        return await self._guard(timed)

    async def uids_after(self, uid: int) -> list[int]:
        """UIDs greater than ``uid``, ascending.

        ``UID SEARCH UID n+1:*`` answers with the last message even when
        nothing is newer (``*`` is the highest UID, and ``a:b`` means the
        same as ``b:a``): those are filtered out here.
        """
        response = await self._guard(
            lambda: self._client.uid_search("UID", f"{uid + 1}:*", charset=None)
        )
        _check(response, "UID SEARCH")
        return [found for found in _numbers(response.lines[:-1]) if found > uid]

    async def highest_uid(self) -> int:
        """The UID of the newest message, 0 for an empty mailbox."""
        response = await self._guard(lambda: self._client.uid_search("UID", "*", charset=None))
        _check(response, "UID SEARCH")
        return max(_numbers(response.lines[:-1]), default=0)

    async def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """The raw messages of ``uids`` (without setting \\Seen); expunged ones are missing."""
        wanted = ",".join(str(uid) for uid in uids)
        response = await self._guard(lambda: self._client.uid("fetch", wanted, "(UID BODY.PEEK[])"))
        _check(response, "UID FETCH")
        return parse_fetch(response.lines)

    async def wait_for_news(self, within: float, *, idling: Callable[[bool], None]) -> bool:
        """IDLE until the server announces new messages (True) or ``within`` seconds pass.

        ``idling(True)`` is called once the server has accepted IDLE, and
        ``idling(False)`` when it ends.
        """
        client = self._client
        queue: asyncio.Queue[Any] = client.protocol.idle_queue
        while not queue.empty():  # pushes of an earlier IDLE were handled by the last sync
            queue.get_nowait()
        idle = await self._guard(lambda: client.idle_start(timeout=within + 60.0))
        news = False
        idling(True)
        try:
            with anyio.move_on_after(within):
                while not news:
                    pushed = await self._guard(
                        lambda: client.wait_server_push(timeout=within + 60.0)
                    )
                    if pushed == aioimaplib.STOP_WAIT_SERVER_PUSH:
                        break
                    news = any(_NEWS.match(bytes(line)) for line in pushed)
        finally:
            idling(False)
        client.idle_done()
        _check(await self._command(lambda: idle), "IDLE")
        return news


def secret_forms(config: ImapConfig) -> list[str]:
    """The password as it may appear in a message: raw, quoted for LOGIN, in the PLAIN token."""
    password = config.secret()
    quoted: str = aioimaplib.quoted(password)
    token = base64.b64encode(f"\0{config.username}\0{password}".encode()).decode()
    forms = {password, quoted, quoted[1:-1], token} - {""}
    return sorted(forms, key=len, reverse=True)


def _check(response: Any, command: str) -> None:
    if response.result != "OK":
        text = bytes(response.lines[-1]).decode(errors="replace") if response.lines else ""
        raise ImapRefused(command, text or response.result)


def _numbers(lines: Sequence[bytes]) -> list[int]:
    return sorted(
        {int(token) for line in lines for token in bytes(line).split() if token.isdigit()}
    )


def parse_fetch(lines: Sequence[bytes | bytearray]) -> dict[int, bytes]:
    """``{uid: raw}`` from aioimaplib's lines of a ``UID FETCH (UID BODY.PEEK[])`` answer.

    A record is ``n FETCH (... UID u ... BODY[] {size}``, the literal (a
    ``bytearray``), then the rest of the record, where the UID may also
    appear. Records without a body (unsolicited flag updates) are ignored.
    """
    found: dict[int, bytes] = {}
    uid: int | None = None
    body: bytes | None = None
    body_next = False
    for line in lines:
        if isinstance(line, bytearray):
            if body_next:
                body = bytes(line)
            body_next = False
            continue
        if _FETCH_START.match(line):
            if uid is not None and body is not None:
                found[uid] = body
            uid, body = None, None
        matched = _FETCH_UID.search(line)
        if matched:
            uid = int(matched.group(1))
        body_next = _FETCH_BODY.search(line) is not None
    if uid is not None and body is not None:
        found[uid] = body
    return found


def encode_mailbox(name: str) -> str:
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501, 5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).rstrip(b"=")
            out.append("&" + encoded.replace(b"/", b",").decode() + "-")
            pending.clear()

    for char in name:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def _tls_context(config: ImapConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file)
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
