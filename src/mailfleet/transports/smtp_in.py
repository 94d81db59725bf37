"""The inbound SMTP server (the MX), on aiosmtpd.

The server knows nothing of grants or the store: every decision goes through
one context object, :class:`MxContext`, that the runtime implements. It never
relays: a recipient the context does not accept is refused at RCPT, ``550
5.7.1`` on a domain the context does not take mail for, ``550 5.1.1`` on one
it does. Each message is answered ``250`` only after the context has
committed it.

Relay tricks (tests/faults/test_relay_tricks.py tries each with swaks): a
recipient is one RFC 5321 ``<mailbox>``, checked before anything else reads
it (``501 5.1.3`` otherwise: no angle brackets, a backslash outside quotes,
NUL or other control characters, bytes that are not UTF-8, a trailing dot).
A source route (``<@a.example:user@b.example>``) is ignored, as RFC 5321
(appendix C) allows: the mailbox after it is the recipient. The local part is
never read as a route: ``user%foreign@local``, ``foreign!user@local`` and
``"user@foreign"@local`` are local mailboxes, refused as a relay attempt
(``550 5.7.1``) unless a grant has exactly that address; nothing the MX
accepts is ever sent on. A domain in any case or in its Unicode or punycode
form is the same domain (``Desk@Example.COM`` is ``desk@example.com``); a
non-ASCII address needs ``SMTPUTF8`` on MAIL (RFC 6531 3.4, ``553 5.6.7``).

No AUTH: the MX takes mail for its own addresses and logs nobody in (there is
no submission service). EHLO never offers AUTH, in the clear or after
STARTTLS (offered when the fleet has ``smtp_tls_cert``), and the command is
refused ``503 5.5.1`` at any point of a session.

Size: the context's :meth:`~MxContext.size_limit` is the largest message any
of its recipients can take. EHLO advertises it (``SIZE``), a ``MAIL ...
SIZE=`` above it is refused at MAIL, and no more is read in DATA. Each
recipient's own limit is applied at RCPT to a declared size and in DATA to
the message itself (RFC 1870 6).

Replies the MX gives itself (RFC 5321 / RFC 3463; the rest are aiosmtpd's):

==============  =====================================================
250 2.1.0       MAIL: sender accepted (the null path ``<>`` too)
250 2.1.5       RCPT: recipient accepted
501 5.1.7       MAIL: the reverse-path is not ``<>`` or ``<mailbox>``
501 5.5.4       MAIL or RCPT: other syntax (no ``FROM:``/``TO:``,
                parameters, SIZE, BODY, SMTPUTF8)
553 5.6.7       MAIL or RCPT: a non-ASCII address without ``SMTPUTF8``
555 5.5.4       MAIL or RCPT: a parameter the MX does not know
503 5.5.1       nested MAIL; RCPT before MAIL; DATA before RCPT;
                AUTH (never offered: the MX logs nobody in)
552 5.3.4       MAIL: declared SIZE above the size limit;
                RCPT: declared SIZE above the grant's ``max_message_bytes``;
                DATA: message above the size limit or a grant's limit
550 5.1.1       RCPT: no such mailbox on a domain of the fleet
                (unknown or deleted grant)
550 5.7.1       RCPT: relay access denied: a domain the fleet does not
                take mail for (address literals too), or a routing
                character (``%``, ``!``, ``@``) in the local part of an
                address that is no grant's;
                RCPT or DATA: refused by the recipient's rules (the
                context's ``Recipient.refusal``, or its answer to DATA)
501 5.1.3       RCPT: the forward-path is not ``<mailbox>`` (RFC 5321
                4.1.2, with RFC 6531 UTF-8; a source route is ignored)
452 4.5.3       RCPT: too many recipients for one message
452 4.2.2       RCPT: the grant's storage is full, or has less left than
                the declared SIZE; DATA: less than the message
500 5.5.2       a command line or a line of DATA too long
451 4.3.0       DATA: the grant's queue is full (try again later);
                RCPT or DATA: the store is unavailable (down, or its
                disk full: :class:`~mailfleet.StoreUnavailable`),
                nothing was accepted; the session goes on
451 4.3.5       RCPT or DATA: an unexpected error (a bug, logged with
                its traceback); nothing was accepted
==============  =====================================================

A store that is unavailable never ends a session and never gets a ``250``:
the command is refused ``451 4.3.0``, the client tries again later (RFC 5321
4.5.4.1), and the next command of the session is answered as usual.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, AnyStr, Protocol

import anyio
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax
from anyio.abc import TaskStatus

from ..model.errors import ListenFailed, StoreUnavailable

__all__ = [
    "AIOSMTPD_OVERRIDDEN",
    "AIOSMTPD_USED",
    "STORE_UNAVAILABLE",
    "Accepted",
    "MxContext",
    "MxHandler",
    "Recipient",
    "serve_smtp",
]

log = logging.getLogger("mailfleet.mx")

# Why aiosmtpd is pinned (``aiosmtpd>=1.4.6,<1.5`` in pyproject.toml): MxSMTP
# replaces and calls members of aiosmtpd.smtp.SMTP that are not its public API
# (its DATA reader, its path parser, its reader and writer, its hook table), and
# any release may change them. tests/test_smtp_data.py holds MxSMTP to stock
# aiosmtpd's replies and content for the pinned range, and fails by name when
# one of the members below is gone. Moving the pin means running those tests.
AIOSMTPD_OVERRIDDEN = ("_getaddr", "push", "smtp_AUTH", "smtp_DATA", "smtp_MAIL", "smtp_RCPT")
"""The methods of ``aiosmtpd.smtp.SMTP`` that :class:`MxSMTP` replaces (same parameters)."""

AIOSMTPD_USED = (
    "_call_handler_hook",
    "_decode_data",
    "_getparams",
    "_handle_hooks",
    "_reader",
    "_set_post_data_state",
    "_strip_command_keyword",
    "_writer",
    "check_auth_needed",
    "check_helo_needed",
    "data_size_limit",
    "enable_SMTPUTF8",
    "envelope",
    "line_length_limit",
    "local_part_limit",
    "session",
)
"""The members of a connected ``aiosmtpd.smtp.SMTP`` that :class:`MxSMTP` reads or calls."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """A mailbox the MX accepts mail for, with the limits that apply to it."""

    address: str
    grant_id: str
    max_message_bytes: int
    storage_left: int
    report: bool = False
    """A bounce address (``bounces+TOKEN@domain``): reports, not a grant's mail."""
    unsubscribe: bool = False
    """An unsubscribe address (``unsubscribe+TOKEN@domain``): a request, not a grant's mail."""
    refusal: str | None = None
    """The reply refusing this recipient for this sender (a rule), if one does."""


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

    async def recipient(self, address: str, *, mail_from: str = "") -> Recipient | None:
        """The mailbox for ``address``, or None if the fleet has none (550).

        ``mail_from`` is the envelope sender (``""`` for the null path): a recipient
        whose ``refusal`` is set is refused with it.
        """
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
        """Commit the message for every recipient, or say why not (4xx/5xx).

        ``mail_from`` is the reverse-path, ``""`` for the null path ``<>``.
        """
        ...

    async def takes_domain(self, domain: str) -> bool:
        """Whether the fleet takes mail for ``domain`` at all (as RCPT gives it: any
        case, Unicode or punycode, perhaps an address literal).

        Asked for a recipient :meth:`recipient` found no mailbox for: False makes
        it a relay attempt (``550 5.7.1``), True an unknown mailbox (``550 5.1.1``).
        """
        return True

    async def mailbox_full(self, recipient: Recipient, size: int) -> None:
        """Told when ``recipient`` is refused ``452 4.2.2`` for storage (``size``: the
        message's declared or actual size); the refusal stands whatever it does."""
        return None


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_LABEL = r"(?!-)[A-Za-z0-9-]+(?<!-)"
_PLAIN_PATH = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*@{_PLAIN_LABEL}(?:\.{_PLAIN_LABEL})*)>(.*)", re.DOTALL
)
"""``<local@domain>`` with a dot-atom local part and a host name: nearly every path."""

# RFC 5321 4.1.2 Reverse-path, with RFC 6531's UTF-8 in atoms, quoted strings
# and labels (not the lone surrogates that stand for bytes that are not UTF-8).
# _PLAIN_PATH is a part of it: a path that matches that one is valid already.
_UTF8 = "\u0080-\ud7ff\ue000-\U0010ffff"
_ATOM = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~{_UTF8}-]+"
_LABEL = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9{_UTF8}-]*[A-Za-z0-9{_UTF8}])?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_QUOTED = rf'"(?:[ !#-\[\]-~{_UTF8}]|\\[ -~])*"'
_LITERAL = r"\[(?:\d{1,3}(?:\.\d{1,3}){3}|[A-Za-z0-9-]*[A-Za-z0-9]:[!-Z^-~]+)\]"
_MAILBOX = rf"(?:{_ATOM}(?:\.{_ATOM})*|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL})"
_ROUTE = rf"@{_DOMAIN}(?:,@{_DOMAIN})*:"
_REVERSE_PATH = re.compile(rf"<(?:(?:{_ROUTE})?{_MAILBOX})?>")
"""``<>`` or ``<mailbox>`` (a source route allowed and ignored), then the parameters."""
_FORWARD_PATH = re.compile(rf"<(?:{_ROUTE})?{_MAILBOX}>")
"""``<mailbox>`` (a source route allowed and ignored), then the parameters."""
_ROUTING = re.compile(r"[%!@]")
"""What would make a local part a route (the percent hack, bang paths, a quoted ``@``)."""

STORE_UNAVAILABLE = "451 4.3.0 Mail store unavailable, nothing was accepted; please try again later"
"""The reply to DATA while the store cannot take the message (RCPT names the address)."""
_UNEXPECTED = "451 4.3.5 Temporary failure, please try again"

_MAIL_SYNTAX = "501 5.5.4 Syntax: MAIL FROM: <address>"
_RCPT_SYNTAX = "501 5.5.4 Syntax: RCPT TO: <address>"
_BAD_RECIPIENT = "501 5.1.3 Bad recipient address syntax"
_NEEDS_SMTPUTF8 = "553 5.6.7 Must declare SMTPUTF8 to send a non-ASCII address"
_NO_AUTH = "503 5.5.1 Error: authentication not enabled"
_COMMAND_TOO_LONG = "500 5.5.2 Command line too long (see RFC 5321 4.5.3.1.4)"
_NOT_REPLY_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
"""What a reply's text must not hold: line breaks, other controls, lone surrogates."""
_STOCK_COMMAND_TOO_LONG = "500 Command line too long"
"""aiosmtpd's reply to an over-long command line, from a method the MX does not replace."""


class MxSMTP(SMTP):
    """aiosmtpd's protocol with the MX's MAIL, and two fast paths: plain paths, DATA in blocks.

    aiosmtpd parses every path with the stdlib's full RFC 5322 address parser
    (and defines a class on each call), about a fifth of its cost per
    message. A plain ``<local@domain>`` gives the same result as that parser
    and is read with one regular expression; anything else (quoted local
    parts, address literals, UTF-8, no angle brackets) still goes through it.
    MAIL: see :meth:`smtp_MAIL`; RCPT: see :meth:`smtp_RCPT`; DATA: see
    :meth:`smtp_DATA`; AUTH: see :meth:`smtp_AUTH`.
    """

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        address, rest, _ = self._read_path(arg)
        return address, rest

    def _read_path(self, arg: str) -> tuple[str | None, str | None, bool]:
        """``_getaddr``'s address and rest, and whether the path was a plain one."""
        plain = _PLAIN_PATH.fullmatch(arg)
        # not plain, or with comments: the full parser
        if plain is None or (rest := plain[2].lstrip()).startswith("("):
            address, params = super()._getaddr(arg)
            return address, params, False
        address = plain[1]
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None, True
        return address, rest, True

    async def push(self, status: AnyStr) -> None:
        """Every reply, as one line of text; aiosmtpd's over-long command line gets its
        enhanced code here.

        Replies repeat what the client sent (aiosmtpd an unknown command, the
        MX an address, the admission an attachment's file name): a CR or LF in
        it would end the reply early and start a forged one (``552 ...\r\n250
        OK``), a NUL or a lone surrogate (a byte that is not UTF-8) is no reply
        text (RFC 5321 4.2) and the latter cannot even be encoded. Each such
        character becomes ``?``.
        """
        if status == _STOCK_COMMAND_TOO_LONG:
            await super().push(_COMMAND_TOO_LONG)
        elif isinstance(status, str) and _NOT_REPLY_TEXT.search(status):
            await super().push(_NOT_REPLY_TEXT.sub("?", status))
        else:
            await super().push(status)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL, with a checked reverse-path and enhanced status codes.

        The path must be ``<>`` or an RFC 5321 ``<mailbox>`` (RFC 6531 UTF-8
        allowed): anything else, which the stdlib's lenient parser would take
        (no angle brackets, no domain, spaces, comments), is ``501 5.1.7``. A
        plain path needs no second look. A ``SIZE=`` above
        ``data_size_limit`` is ``552 5.3.4`` here, before any data is sent.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("MAIL"):
            return
        assert self.session is not None
        assert self.envelope is not None
        syntax_error = _MAIL_SYNTAX
        if self.session.extended_smtp:
            syntax_error += " [SP <mail-parameters>]"
        arg = None if arg is None else self._strip_command_keyword("FROM:", arg)
        if not arg:
            await self.push(syntax_error)
            return
        address, rest, plain = self._read_path(arg)
        if address is None or not (plain or _REVERSE_PATH.match(arg)):
            await self.push("501 5.1.7 Bad sender address syntax")
            return
        if rest and not self.session.extended_smtp:
            await self.push(syntax_error)
            return
        if self.envelope.mail_from:
            await self.push("503 5.5.1 Error: nested MAIL command")
            return
        mail_options = (rest or "").upper().split()
        params = self._getparams(mail_options)
        if params is None:
            await self.push(syntax_error)
            return
        if not self._decode_data and params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            await self.push("501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME")
            return
        smtputf8 = params.pop("SMTPUTF8", False)
        if not isinstance(smtputf8, bool):
            await self.push("501 5.5.4 Error: SMTPUTF8 takes no arguments")
            return
        if smtputf8 and not self.enable_SMTPUTF8:
            await self.push("501 5.5.4 Error: SMTPUTF8 disabled")
            return
        if not smtputf8 and not address.isascii():
            await self.push(_NEEDS_SMTPUTF8)
            return
        self.envelope.smtp_utf8 = smtputf8
        size = params.pop("SIZE", None)
        if size:
            if isinstance(size, bool) or not (size.isascii() and size.isdigit()):
                await self.push(syntax_error)
                return
            if self.data_size_limit and int(size) > self.data_size_limit:
                await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
                return
        if params:
            await self.push("555 5.5.4 MAIL FROM parameters not recognized or not implemented")
            return
        status = await self._call_handler_hook("MAIL", address, mail_options)
        if status is MISSING:
            self.envelope.mail_from = address
            self.envelope.mail_options.extend(mail_options)
            status = "250 2.1.0 OK"
        await self.push(status)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """aiosmtpd's RCPT, with a checked forward-path and enhanced status codes.

        The path must be an RFC 5321 ``<mailbox>`` (a source route is ignored;
        RFC 6531 UTF-8 only after ``MAIL ... SMTPUTF8``, else ``553 5.6.7``):
        anything else, which the stdlib's lenient parser would take or choke
        on (no angle brackets or domain, NUL, bytes that are not UTF-8, an
        escape outside quotes), is ``501 5.1.3``, before the handler sees it;
        so a reply that names the address names a well-formed one.
        """
        if await self.check_helo_needed() or await self.check_auth_needed("RCPT"):
            return
        assert self.session is not None
        assert self.envelope is not None
        if not self.envelope.mail_from:
            await self.push("503 5.5.1 Error: need MAIL command")
            return
        syntax_error = _RCPT_SYNTAX
        if self.session.extended_smtp:
            syntax_error += " [SP <mail-parameters>]"
        arg = None if arg is None else self._strip_command_keyword("TO:", arg)
        if not arg:
            await self.push(syntax_error)
            return
        if not (_PLAIN_PATH.fullmatch(arg) or _FORWARD_PATH.match(arg)):
            await self.push(_BAD_RECIPIENT)
            return
        address, rest, _ = self._read_path(arg)
        if not address:
            await self.push(_BAD_RECIPIENT)
            return
        if not self.envelope.smtp_utf8 and not address.isascii():
            await self.push(_NEEDS_SMTPUTF8)
            return
        if rest and not self.session.extended_smtp:
            await self.push(syntax_error)
            return
        rcpt_options = (rest or "").upper().split()
        params = self._getparams(rcpt_options)
        if params is None:
            await self.push(syntax_error)
            return
        if params:
            await self.push("555 5.5.4 RCPT TO parameters not recognized or not implemented")
            return
        status = await self._call_handler_hook("RCPT", address, rcpt_options)
        if status is MISSING:
            self.envelope.rcpt_tos.append(address)
            self.envelope.rcpt_options.extend(rcpt_options)
            status = "250 2.1.5 OK"
        await self.push(status)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """Refused, in the clear and over TLS alike: the MX logs nobody in.

        EHLO does not offer AUTH (:meth:`MxHandler.handle_EHLO`); a client that
        sends it anyway gets ``503 5.5.1`` (Postfix's words with no SASL), and
        its argument is neither read nor logged.
        """
        await self.push(_NO_AUTH)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """DATA with the message read in blocks rather than line by line.

        aiosmtpd reads the content one line at a time (an await and a dozen
        checks per line, about a quarter of its cost per message). This
        reads up to the terminating ``CRLF.CRLF`` in blocks and applies the
        same rules to the whole: dot-unstuffing (RFC 5321 4.5.2), ``500``
        for a line longer than ``line_length_limit``, ``552`` above
        ``data_size_limit`` (both once the message has been read, as RFC 5321
        4.2.5 implies), at most one block held beyond the size limit. Its
        replies carry enhanced status codes; aiosmtpd's have none.
        """
        if self._decode_data or "DATA" not in self._handle_hooks:
            await super().smtp_DATA(arg)  # the stock path for other configurations
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content = await self._read_content()
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if content is None:
            reply = "552 5.3.4 Error: Too much mail data"
        elif any(len(line) + 2 > self.line_length_limit for line in content.split(b"\r\n")):
            reply = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
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

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """aiosmtpd's EHLO reply without AUTH, which aiosmtpd would offer after STARTTLS."""
        session.host_name = hostname  # the hook's job, when there is one
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept only addresses of the fleet's grants with room left (for a declared SIZE).

        ``address`` is a well-formed mailbox (:meth:`MxSMTP.smtp_RCPT` checked
        it). One that is no grant's is a relay attempt (``550 5.7.1``) on a
        domain the fleet does not take mail for, or with a routing character in
        its local part; an unknown mailbox (``550 5.1.1``) otherwise.
        """
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        mail_from = envelope.mail_from or ""
        try:
            recipient = await self.context.recipient(
                address, mail_from="" if mail_from == "<>" else mail_from
            )
        except StoreUnavailable as exc:
            log.info("451 4.3.0 at RCPT <%s>: %s", address, exc)
            return f"451 4.3.0 <{address}>: mail store unavailable, please try again later"
        except Exception:
            log.exception("looking up the recipient <%s> failed", address)
            return _UNEXPECTED
        if recipient is None:
            local, _, domain = address.rpartition("@")
            if not await self.context.takes_domain(domain):
                return f"550 5.7.1 <{address}>: relay access denied"
            if _ROUTING.search(local):
                return f"550 5.7.1 <{address}>: relay access denied (a route in the local part)"
            return f"550 5.1.1 <{address}>: no such mailbox here"
        if recipient.refusal is not None:
            return recipient.refusal
        size = _declared_size(envelope.mail_options)
        if size > recipient.max_message_bytes:
            return f"552 5.3.4 <{address}>: message too big for this mailbox"
        if recipient.storage_left <= 0 or recipient.storage_left < size:
            await self.context.mailbox_full(recipient, size)
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
        full = [r for r in recipients if len(data) > r.storage_left]
        if full:
            for recipient in full:
                await self.context.mailbox_full(recipient, len(data))
            return "452 4.2.2 Mailbox full"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        mail_from = envelope.mail_from or ""
        try:
            accepted = await self.context.accept(
                recipients,
                data,
                mail_from="" if mail_from == "<>" else mail_from,
                peer=peer,
                helo=session.host_name,
            )
        except StoreUnavailable as exc:
            log.info("451 4.3.0 at DATA from %s: %s", peer, exc)
            return STORE_UNAVAILABLE
        except Exception:
            log.exception("storing a message from %s failed", peer)
            return _UNEXPECTED
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
    itself past it); a grant's own limit is applied at RCPT to a declared
    ``SIZE=``, and in DATA to what arrives. With a
    ``tls_context`` the server offers STARTTLS. Raises
    :class:`~mailfleet.model.errors.ListenFailed` at once when the address
    cannot be listened on (the port is taken or needs privileges, the host
    does not resolve).
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
            # no login (smtp_AUTH refuses it): not even aiosmtpd's built-in mechanisms,
            # which it would name in its log of every connection
            auth_exclude_mechanism=("LOGIN", "PLAIN"),
        )

    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(factory, host=host, port=port)
    except OSError as exc:
        raise _listen_failed(host, port, exc) from exc
    bound = server.sockets[0].getsockname()[1]
    log.info("SMTP listening on %s:%s", host, bound)
    task_status.started(bound)
    try:
        await anyio.sleep_forever()
    finally:
        server.close()
        with anyio.CancelScope(shield=True):
            await server.wait_closed()


def _listen_failed(host: str, port: int, exc: OSError) -> ListenFailed:
    return ListenFailed.from_os_error("SMTP", host, port, exc)
