"""Building outbound messages: :func:`build_message` gives raw bytes ready to sign and send.

The output is 7-bit clean with CRLF line ends: non-ASCII header text goes in
RFC 2047 encoded words, non-ASCII filenames in RFC 2231 parameters, bodies in
UTF-8 with quoted-printable or base64 when they are not plain short ASCII.
A 7-bit message survives every relay unchanged, which a DKIM signature needs.

The structure is the usual one::

    text only                 text/plain
    text and html             multipart/alternative (text/plain, text/html)
    inline images for html    ... text/html becomes multipart/related (html, images)
    attachments               multipart/mixed (the body above, attachments...)

Every value that ends up in a header is checked: a CR, LF or NUL raises
:class:`~mailfleet.InvalidInput` naming the field, so header injection is
impossible. Addresses are validated with :func:`~mailfleet.model.addresses.parse_address`
and written in their normal form.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage, MIMEPart
from email.policy import default as default_policy
from email.utils import format_datetime
from types import MappingProxyType

from ..model.addresses import normalize_domain, parse_address
from ..model.errors import InvalidAddress, InvalidInput
from .parse import ParsedMessage, has_reply_prefix
from .threads import reply_references, usable_id

__all__ = ["BuiltMessage", "OutgoingAttachment", "build_message"]

_POLICY = default_policy.clone(cte_type="7bit", linesep="\r\n")
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OutgoingAttachment:
    """A file to attach to an outbound message.

    ``inline`` attachments with a ``content_id`` are placed next to the HTML
    body (``multipart/related``) so that it can show them (``<img
    src="cid:logo@example.com">``); give ``content_id`` with or without angle
    brackets. A ``message/rfc822`` attachment is sent 7bit when it can be, else
    base64 (as Outlook does), so the message stays 7-bit clean.
    """

    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    inline: bool = False
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    """A message ready for the outbox.

    ``recipients`` is the envelope: the To and Cc addresses in normal form,
    without repeats, in order.
    """

    raw: bytes
    message_id: str
    recipients: tuple[str, ...]


def build_message(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str | None = None,
    cc: Sequence[str] = (),
    reply_to: str | Sequence[str] | None = None,
    attachments: Sequence[OutgoingAttachment] = (),
    in_reply_to: ParsedMessage | None = None,
    message_id_domain: str,
    auto_submitted: str | None = None,
    headers: Mapping[str, str] = _NO_HEADERS,
    date: datetime | None = None,
) -> BuiltMessage:
    """Build a complete message; raises :class:`~mailfleet.InvalidInput` naming a bad field.

    Addresses may be bare (``a@example.com``) or with a display name
    (``Ada <a@example.com>``); a single string is accepted for ``to``, ``cc``
    and ``reply_to``. A reply (``in_reply_to``, the parsed parent) gets
    ``Re: `` in front of the subject unless it has a reply prefix already,
    ``In-Reply-To``, ``References`` (see
    :func:`~mailfleet.mail.threads.reply_references`) and ``Auto-Submitted:
    auto-replied``. ``auto_submitted`` sets that header for any message
    (``"auto-generated"``, ``"no"``...), replies included. ``headers`` adds
    extra headers (``List-Unsubscribe``...); it may not set the ones this
    function writes. ``date`` defaults to now.
    """
    extra = _extra_headers(headers)
    # ASCII values are written as given, folded at their spaces only: the email package
    # would turn a long unbreakable URL (List-Unsubscribe) into RFC 2047 encoded words.
    verbatim = [(name, value) for name, value in extra if value.isascii()]
    encoded = [(name, value) for name, value in extra if not value.isascii()]
    if html is None and not attachments and not encoded and not cc and reply_to is None:
        simple = _build_plain(
            sender,
            to,
            subject,
            text,
            in_reply_to,
            message_id_domain,
            auto_submitted,
            date,
            verbatim,
        )
        if simple is not None:
            return simple
    mailboxes = _Mailboxes.check(sender, to, cc, reply_to)
    domain = normalize_domain(message_id_domain, field="message_id_domain")
    _check_header_text("subject", subject)
    _check_unicode("text", text)
    if html is not None:
        _check_unicode("html", html)
    if in_reply_to is not None and not has_reply_prefix(subject):
        subject = f"Re: {subject}"
    message_id = f"<{secrets.token_hex(16)}@{domain}>"

    message = EmailMessage(policy=_POLICY)
    message["From"] = mailboxes.sender
    message["To"] = mailboxes.to
    if mailboxes.cc:
        message["Cc"] = mailboxes.cc
    if mailboxes.reply_to:
        message["Reply-To"] = mailboxes.reply_to
    message["Subject"] = subject
    message["Date"] = format_datetime(_aware(date))
    message["Message-ID"] = message_id
    for name, value in _threading_headers(in_reply_to, auto_submitted):
        message[name] = value
    for name, value in encoded:
        message[name] = value
    message["MIME-Version"] = "1.0"
    _set_body(message, _body(text, html, attachments))
    raw = message.as_bytes()
    if verbatim:  # in their place: after the other extra fields, before MIME-Version
        head_end = raw.find(b"\r\n\r\n")
        at = raw.find(b"\r\nMIME-Version: 1.0\r\n", 0, head_end + 2)
        lines = "".join(f"\r\n{_fold(name, value)}" for name, value in verbatim)
        raw = raw[:at] + lines.encode("ascii") + raw[at:]
    return BuiltMessage(raw, message_id, mailboxes.recipients)


def _build_plain(
    sender: str,
    to: str | Sequence[str],
    subject: str,
    text: str,
    in_reply_to: ParsedMessage | None,
    message_id_domain: str,
    auto_submitted: str | None,
    date: datetime | None,
    extra: Sequence[tuple[str, str]] = (),
) -> BuiltMessage | None:
    """The common case written directly, about ten times cheaper than the email package:
    bare ASCII addresses, an ASCII subject, a text body. None: take the general path.

    It writes what the general path would, byte for byte in structure: the same
    headers in the same order, a 7bit or quoted-printable text/plain body.
    """
    recipients = [to] if isinstance(to, str) else list(to)
    if not recipients:
        return None
    for value in (sender, *recipients, subject):
        if not isinstance(value, str) or not value.isascii() or len(value) > 900:
            return None
    if "<" in sender or any("<" in r or "," in r for r in recipients) or "\0" in text:
        return None
    _check_header_text("subject", subject)
    _check_unicode("text", text)
    sender_address = str(parse_address(_check_header_text("sender", sender), field="sender"))
    addresses = [str(parse_address(_check_header_text("to", r), field="to")) for r in recipients]
    domain = normalize_domain(message_id_domain, field="message_id_domain")
    if in_reply_to is not None and not has_reply_prefix(subject):
        subject = f"Re: {subject}"
    if len(subject) > 900 or not _SIMPLE_SUBJECT.fullmatch(subject):
        return None  # long or unusual subjects are folded and encoded by the general path
    message_id = f"<{secrets.token_hex(16)}@{domain}>"
    lines = [
        f"From: {sender_address}",
        f"To: {', '.join(addresses)}",
        f"Subject: {subject}",
        f"Date: {format_datetime(_aware(date))}",
        f"Message-ID: {message_id}",
    ]
    lines += [f"{name}: {value}" for name, value in _threading_headers(in_reply_to, auto_submitted)]
    lines += [_fold(name, value) for name, value in extra]
    body = _LINE_END.sub("\r\n", text)
    if not body.endswith("\r\n"):
        body += "\r\n"
    if body.isascii() and all(len(line) <= 998 for line in body.split("\r\n")):
        encoded, cte = body.encode("ascii"), "7bit"
    else:
        encoded = binascii.b2a_qp(body.encode("utf-8"), header=False).replace(b"\n", b"\r\n")
        encoded = encoded.replace(b"\r\r\n", b"\r\n")
        cte = "quoted-printable"
    lines += [
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        f"Content-Transfer-Encoding: {cte}",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    return BuiltMessage(head + encoded, message_id, tuple(dict.fromkeys(addresses)))


# A subject that needs neither encoding nor folding: printable ASCII words.
_SIMPLE_SUBJECT = re.compile(r"[ -~]{0,900}")


# -- checks -----------------------------------------------------------------------------

_FORBIDDEN_IN_HEADERS = re.compile(r"[\r\n\0]")
_NAME_ADDR = re.compile(r"(?P<name>.*?)\s*<(?P<address>[^<>]*)>\s*", re.DOTALL)


def _check_header_text(field: str, value: object) -> str:
    """``value`` as a header-safe string, or InvalidInput naming ``field``."""
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string", value=value)
    if _FORBIDDEN_IN_HEADERS.search(value):
        raise InvalidInput(field, "must not contain line breaks (CR, LF) or NUL", value=value)
    _check_unicode(field, value)
    return value


def _check_unicode(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string", value=value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(field, "is not valid Unicode (lone surrogate)", value=value) from None


def _mailbox(value: object, field: str) -> HeaderAddress:
    """One ``addr`` or ``Name <addr>``, validated, with the address in normal form."""
    text = _check_header_text(field, value)
    match = _NAME_ADDR.fullmatch(text.strip())
    name, raw = (match["name"], match["address"]) if match else ("", text)
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    address = parse_address(raw, field=field)
    if not address.local.isascii():
        raise InvalidAddress(raw, "non-ASCII local parts (SMTPUTF8) are not sent yet", field=field)
    try:
        return HeaderAddress(display_name=name, addr_spec=str(address))
    except Exception as exc:  # a local part email-validator allows but the email package not
        raise InvalidAddress(raw, str(exc), field=field) from None


def _mailbox_list(values: str | Sequence[str] | None, field: str) -> tuple[HeaderAddress, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    return tuple(_mailbox(value, field) for value in values)


@dataclass(frozen=True, slots=True)
class _Mailboxes:
    """The checked addresses of a message."""

    sender: HeaderAddress
    to: tuple[HeaderAddress, ...]
    cc: tuple[HeaderAddress, ...]
    reply_to: tuple[HeaderAddress, ...]

    @classmethod
    def check(
        cls,
        sender: str,
        to: str | Sequence[str],
        cc: str | Sequence[str],
        reply_to: str | Sequence[str] | None,
    ) -> _Mailboxes:
        checked = cls(
            _mailbox(sender, "sender"),
            _mailbox_list(to, "to"),
            _mailbox_list(cc, "cc"),
            _mailbox_list(reply_to, "reply_to"),
        )
        if not checked.to:
            raise InvalidInput("to", "at least one recipient is needed", value=to)
        return checked

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(box.addr_spec for box in (*self.to, *self.cc)))


def _aware(date: datetime | None) -> datetime:
    if date is None:
        return datetime.now(UTC).replace(microsecond=0)
    if date.tzinfo is None or date.utcoffset() is None:
        raise InvalidInput("date", "must be timezone-aware", value=date)
    return date


# -- headers ----------------------------------------------------------------------------

_AUTO_SUBMITTED = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but the colon (RFC 5322 field-name)
_WRITTEN_HERE = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "auto-submitted",
        "mime-version",
        "return-path",
    }
)


def _threading_headers(
    parent: ParsedMessage | None, auto_submitted: str | None
) -> list[tuple[str, str]]:
    """In-Reply-To, References and Auto-Submitted, as a reply (or not) needs them."""
    found: list[tuple[str, str]] = []
    if parent is not None:
        if parent.message_id and usable_id(parent.message_id):
            found.append(("In-Reply-To", parent.message_id))
        references = reply_references(parent)
        if references:
            found.append(("References", " ".join(references)))
    if auto_submitted is None and parent is not None:
        auto_submitted = "auto-replied"
    if auto_submitted is not None:
        if not isinstance(auto_submitted, str) or not _AUTO_SUBMITTED.fullmatch(auto_submitted):
            raise InvalidInput(
                "auto_submitted", "must be a keyword such as 'auto-replied'", value=auto_submitted
            )
        found.append(("Auto-Submitted", auto_submitted))
    return found


def _extra_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    checked = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise InvalidInput("headers", f"{name!r} is not a header name", value=name)
        lowered = name.lower()
        if lowered in _WRITTEN_HERE or lowered.startswith("content-"):
            raise InvalidInput(f"headers.{name}", "is written by build_message itself", value=value)
        checked.append((name, _check_header_text(f"headers.{name}", value)))
    return checked


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded before spaces so that lines keep to 78 characters where
    they can (RFC 5322 2.2.3); a word longer than that stays whole on its line."""
    lines: list[str] = []
    line = f"{name}:"
    for word in value.split(" "):
        if len(line) + 1 + len(word) > 78 and line != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines)


# -- body -------------------------------------------------------------------------------

_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_LINE_END = re.compile(r"\r\n|\r|\n")
_CONTENT_ID = re.compile(r"<?(?P<id>[!-;=?-~]+)>?")  # printable ASCII but < and >


def _body(text: str, html: str | None, attachments: Sequence[OutgoingAttachment]) -> MIMEPart:
    """The MIME tree of the body, as drawn in the module's docstring."""
    related: list[MIMEPart] = []
    mixed: list[MIMEPart] = []
    for index, attachment in enumerate(attachments):
        part = _attachment_part(attachment, f"attachments[{index}]")
        beside_html = html is not None and attachment.inline and attachment.content_id
        (related if beside_html else mixed).append(part)
    body = _text_part(text, "plain")
    if html is not None:
        rich = _text_part(html, "html")
        if related:
            rich = _multipart("related", [rich, *related])
        body = _multipart("alternative", [body, rich])
    if mixed:
        body = _multipart("mixed", [body, *mixed])
    return body


def _text_part(content: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    # The stdlib would send NUL as is in a 7bit part, where it is not allowed.
    cte = "quoted-printable" if "\0" in content else None
    part.set_content(content, subtype=subtype, charset="utf-8", cte=cte)
    return part


def _multipart(subtype: str, parts: list[MIMEPart]) -> MIMEPart:
    container = MIMEPart(policy=_POLICY)
    boundary = f"=_{secrets.token_hex(16)}"
    container["Content-Type"] = f'multipart/{subtype}; boundary="{boundary}"'
    for part in parts:
        container.attach(part)
    return container


def _attachment_part(attachment: OutgoingAttachment, field: str) -> MIMEPart:
    if not isinstance(attachment.content, bytes | bytearray | memoryview):
        raise InvalidInput(f"{field}.content", "must be bytes", value=attachment.content)
    content = bytes(attachment.content)
    filename = _check_header_text(f"{field}.filename", attachment.filename)
    content_type = _check_header_text(f"{field}.content_type", attachment.content_type)
    if not _MIME_TYPE.fullmatch(content_type) or content_type.lower().startswith("multipart/"):
        raise InvalidInput(f"{field}.content_type", "must be a type/subtype", value=content_type)
    maintype, _, subtype = content_type.lower().partition("/")
    part = MIMEPart(policy=_POLICY)
    part.set_content(
        content,
        maintype,
        subtype,
        cte="7bit" if maintype == "message" and _is_7bit(content) else "base64",
        disposition="inline" if attachment.inline else "attachment",
        filename=filename or None,
        cid=_content_id(attachment.content_id, f"{field}.content_id"),
    )
    if maintype == "message":  # the generator writes message/* text as is: fix its line ends
        part.set_payload(_LINE_END.sub("\r\n", str(part.get_payload())))
    return part


def _content_id(value: str | None, field: str) -> str | None:
    if value is None:
        return None
    text = _check_header_text(field, value)
    match = _CONTENT_ID.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(field, "must be printable ASCII, like 'logo@example.com'", value=value)
    return f"<{match['id']}>"


def _is_7bit(content: bytes) -> bool:
    """Whether content can travel as 7bit: ASCII, no NUL, no bare CR, lines of at most 998."""
    if not content.isascii() or b"\0" in content or b"\r" in content.replace(b"\r\n", b""):
        return False
    return all(len(line) <= 998 for line in content.split(b"\n"))


def _set_body(message: EmailMessage, body: MIMEPart) -> None:
    """Move the body's content headers and payload into the message."""
    for name, value in body.items():
        message[name] = value
    message.set_payload(body.get_payload())
