"""The inbound SMTP server (the MX), on aiosmtpd.

The server knows nothing of grants or the store: every decision goes through
one context object, :class:`MxContext`, that the runtime implements. It never
relays: a recipient the context does not accept gets ``550 5.1.1`` at RCPT.
Each message is answered ``250`` only after the context has committed it.

Size: the context's :meth:`~MxContext.size_limit` is the largest message any
of its recipients can take. EHLO advertises it (``SIZE``), a ``MAIL ...
SIZE=`` above it is refused at MAIL, and no more is read in DATA. Each
recipient's own limit is applied at RCPT to a declared size and in DATA to
the message itself (RFC 1870 6).

Replies used (RFC 5321 / RFC 3463):

==============  =====================================================
550 5.1.1       no such mailbox (unknown or deleted grant)
501 5.1.3       recipient address syntax
452 4.5.3       too many recipients for one message
452 4.2.2       the grant's storage is full, or has less left than the
                SIZE declared at MAIL (at RCPT) or than the message (DATA)
552 5.3.4       message (or the SIZE declared at MAIL, at RCPT) larger
                than the workspace allows
451 4.3.0       the grant's queue is full (try again later)
451 4.3.5       the store failed; nothing was accepted
==============  =====================================================
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax
from anyio.abc import TaskStatus

__all__ = [
    "AIOSMTPD_OVERRIDDEN",
    "AIOSMTPD_USED",
    "Accepted",
    "MxContext",
    "MxHandler",
    "Recipient",
    "serve_smtp",
]

log = logging.getLogger("mailfleet.smtp")

# Why aiosmtpd is pinned (``aiosmtpd>=1.4.6,<1.5`` in pyproject.toml): MxSMTP
# replaces and calls members of aiosmtpd.smtp.SMTP that are not its public API
# (its DATA reader, its path parser, its reader and writer, its hook table), and
# any release may change them. tests/test_smtp_data.py holds MxSMTP to stock
# aiosmtpd's replies and content for the pinned range, and fails by name when
# one of the members below is gone. Moving the pin means running those tests.
AIOSMTPD_OVERRIDDEN = ("_getaddr", "smtp_DATA")
"""The methods of ``aiosmtpd.smtp.SMTP`` that :class:`MxSMTP` replaces (same parameters)."""

AIOSMTPD_USED = (
    "_call_handler_hook",
    "_decode_data",
    "_handle_hooks",
    "_reader",
    "_set_post_data_state",
    "_writer",
    "check_auth_needed",
    "check_helo_needed",
    "data_size_limit",
    "envelope",
    "line_length_limit",
    "local_part_limit",
    "push",
)
"""The members of a connected ``aiosmtpd.smtp.SMTP`` that :class:`MxSMTP` reads or calls."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """A mailbox the MX accepts mail for, with the limits that apply to it."""

    address: str
    grant_id: str
    max_message_bytes: int
    storage_left: int


@dataclass(frozen=True, slots=True)
class Accepted:
    """The context's answer for one message: the SMTP reply to give."""

    reply: str


class MxContext(Protocol):
    """What the MX asks of the runtime: one object, passed to every hook."""

    def size_limit(self) -> int:
        """The largest message, in bytes, that any recipient can take.

        Asked for each connection, so it must be cheap (a constant or a cached
        value): EHLO advertises it and MAIL refuses a larger declared SIZE.
        """
        ...

    async def recipient(self, address: str) -> Recipient | None:
        """The mailbox for ``address``, or None if the fleet has none (550)."""
        ...

    async def accept(
        self,
        recipients: Sequence[Recipient],
        data: bytes,
        *,
        mail_from: str,
        peer: str,
        helo: str | None,
    ) -> Accepted:
        """Commit the message for every recipient, or say why not (4xx/5xx)."""
        ...


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)", re.DOTALL
)
"""``<local@domain>`` with a dot-atom local part and a host name: nearly every path."""


class MxSMTP(SMTP):
    """aiosmtpd's protocol with two fast paths: plain paths, and DATA in blocks.

    aiosmtpd parses every path with the stdlib's full RFC 5322 address parser
    (and defines a class on each call), about a fifth of its cost per
    message. A plain ``<local@domain>`` gives the same result as that parser
    and is read with one regular expression; anything else (quoted local
    parts, address literals, UTF-8, no angle brackets) still goes through it.
    DATA: see :meth:`smtp_DATA`.
    """

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.fullmatch(arg)
        rest = plain[2].lstrip() if plain else ""
        if plain is None or rest.startswith("("):  # comments: the full parser
            return super()._getaddr(arg)
        address = plain[1]
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA with the message read in blocks rather than line by line.

        aiosmtpd reads the content one line at a time (an await and a dozen
        checks per line, about a quarter of its cost per message). This
        reads up to the terminating ``CRLF.CRLF`` in blocks and applies the
        same rules to the whole: dot-unstuffing (RFC 5321 4.5.2), ``500``
        for a line longer than ``line_length_limit``, ``552`` above
        ``data_size_limit`` (both once the message has been read, as RFC 5321
        4.2.5 implies), at most one block held beyond the size limit.
        """
        if self._decode_data or "DATA" not in self._handle_hooks:
            await super().smtp_DATA(arg)  # the stock path for other configurations
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await self._read_content()
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if content is None:
            reply = "552 Error: Too much mail data"
        elif any(len(line) + 2 > self.line_length_limit for line in content.split(b"\r\n")):
            reply = "500 Line too long (see RFC5321 4.5.3.1.6)"
        else:
            if content.startswith(b"."):  # dot-unstuffing, first line
                content = content[1:]
            content = content.replace(b"\r\n.", b"\r\n")
            self.envelope.content = self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            reply = "250 OK" if status is MISSING else status
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(reply)

    async def _read_content(self) -> bytes | None:
        """The content up to (not including) the lone dot, still dot-stuffed;
        None if it exceeded ``data_size_limit`` (read and dropped all the same)."""
        reader = self._reader
        limit = self.data_size_limit
        parts: list[bytes] = []
        size = 0

        def keep(block: bytes) -> None:
            nonlocal size
            size += len(block)
            if limit and size > limit:
                parts.clear()  # drop at once; only the size still counts
            else:
                parts.append(block)

        # Inside a line the terminator is the "\n.\r\n" of "\r\n.\r\n": searched for in
        # blocks, and real when the byte before it (in the block or kept before)
        # is "\r". Only at the start of a line, where the terminator is the
        # ".\r\n" itself, is a byte read on its own: anything but "." puts the
        # reader inside the line; a "." line is read to its LF and compared.
        last = b""  # the last byte kept
        at_line_start = True
        while True:
            if at_line_start:
                first = await reader.readexactly(1)
                if first == b".":
                    line = first + await _read_through(reader, b"\n")
                    if line == b".\r\n":
                        break
                    at_line_start = line.endswith(b"\r\n")
                else:
                    line, at_line_start = first, False
                keep(line)
                last = line[-1:]
                continue
            try:
                block = await reader.readuntil(_TERMINATOR_TAIL)
            except asyncio.LimitOverrunError as exc:
                # Past the stream's limit without the separator: take what was
                # scanned (a separator starting in it would have been found whole).
                block = await reader.read(exc.consumed)
                keep(block)
                last = block[-1:]
                continue
            before = block[-5:-4] if len(block) > 4 else last
            if before == b"\r":
                keep(block[:-3])  # the last line's CRLF belongs to the content
                break
            keep(block)  # a bare LF, then ".\r\n": a line that ends here
            last, at_line_start = b"\n", True
        return None if limit and size > limit else b"".join(parts)


async def _read_through(reader: asyncio.StreamReader, separator: bytes) -> bytes:
    """Up to and including ``separator``, or as much as the stream's limit allows."""
    try:
        return await reader.readuntil(separator)
    except asyncio.LimitOverrunError as exc:
        return await reader.read(exc.consumed)


_TERMINATOR_TAIL = b"\n.\r\n"


class MxHandler:
    """aiosmtpd handler: RCPT and DATA decisions, delegated to an :class:`MxContext`."""

    def __init__(self, context: MxContext, *, max_recipients: int = 100) -> None:
        self.context = context
        self.max_recipients = max_recipients

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept only addresses of the fleet's grants with room left (for a declared SIZE)."""
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        if "@" not in address:
            return "501 5.1.3 Bad recipient address syntax"
        recipient = await self.context.recipient(address)
        if recipient is None:
            return f"550 5.1.1 <{address}>: no such mailbox here"
        size = _declared_size(envelope.mail_options)
        if size > recipient.max_message_bytes:
            return f"552 5.3.4 <{address}>: message too big for this mailbox"
        if recipient.storage_left <= 0 or recipient.storage_left < size:
            return f"452 4.2.2 <{address}>: mailbox full"
        recipients: list[Recipient] = envelope.__dict__.setdefault("mailfleet_recipients", [])
        recipients.append(recipient)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Check size and storage per recipient, then commit before answering 250."""
        data = envelope.original_content or envelope.content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        recipients: list[Recipient] = envelope.__dict__.get("mailfleet_recipients", [])
        if not recipients:
            return "554 5.5.1 No valid recipients"
        if any(len(data) > r.max_message_bytes for r in recipients):
            return "552 5.3.4 Message too big for this mailbox"
        if any(len(data) > r.storage_left for r in recipients):
            return "452 4.2.2 Mailbox full"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        try:
            accepted = await self.context.accept(
                recipients,
                data,
                mail_from=envelope.mail_from or "",
                peer=peer,
                helo=session.host_name,
            )
        except Exception:
            log.exception("storing a message from %s failed", peer)
            return "451 4.3.5 Temporary failure, please try again"
        return accepted.reply


def _declared_size(mail_options: list[str]) -> int:
    """The ``SIZE=`` of MAIL (RFC 1870; the last one, as MAIL checked it), or 0."""
    for option in reversed(mail_options):
        if option.startswith("SIZE="):
            return int(option[5:])
    return 0


async def serve_smtp(
    context: MxContext,
    *,
    host: str = "127.0.0.1",
    port: int = 2525,
    hostname: str | None = None,
    data_size_limit: int | None = None,
    max_recipients: int = 100,
    tls_context: ssl.SSLContext | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for SMTP until cancelled; ``task_status.started(port)`` gives the bound port.

    ``data_size_limit`` (default: the context's ``size_limit()``, asked for each
    connection) is the hard cap for any message (aiosmtpd answers 552
    itself past it); per-workspace limits are applied in DATA. With a
    ``tls_context`` the server offers STARTTLS.
    """
    handler = MxHandler(context, max_recipients=max_recipients)

    def factory() -> Any:
        return MxSMTP(
            handler,
            data_size_limit=context.size_limit() if data_size_limit is None else data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            tls_context=tls_context,
            ident="mailfleet ESMTP",
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host=host, port=port)
    bound = server.sockets[0].getsockname()[1]
    log.info("SMTP listening on %s:%s", host, bound)
    task_status.started(bound)
    try:
        await anyio.sleep_forever()
    finally:
        server.close()
        with anyio.CancelScope(shield=True):
            await server.wait_closed()
