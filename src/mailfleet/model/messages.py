"""Stored inbound mail and the cheap header read done on arrival (full MIME: ``mail/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

__all__ = ["MessageHeaders", "StoredMessage", "parse_headers"]


@dataclass(frozen=True, slots=True)
class MessageHeaders:
    """The envelope-independent facts read from a message's header block."""

    sender: str | None
    recipients: tuple[str, ...]
    subject: str | None
    message_id: str | None
    headers: tuple[tuple[str, str], ...]


def parse_headers(raw: bytes) -> MessageHeaders:
    """Read the header block of ``raw`` quickly; malformed headers never raise.

    This is the hot path of every delivery, so it uses the stdlib's lenient
    ``compat32`` parser and decodes RFC 2047 words only where they appear
    (about 15x cheaper than the structured ``email.policy.default`` parser);
    the full MIME model is :func:`mailfleet.mail.parse.parse_message`.
    """
    parsed = BytesHeaderParser(policy=compat32).parsebytes(raw)
    headers: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    for name, value in parsed.items():
        text = _decoded(value)
        headers.append((name, text))
        first.setdefault(name.lower(), text)

    def address_list(*names: str) -> list[str]:
        values = [first[n] for n in names if n in first]
        return [address for _, address in getaddresses(values) if address]

    senders = address_list("from")
    return MessageHeaders(
        sender=senders[0] if senders else None,
        recipients=tuple(address_list("to", "cc")),
        subject=first.get("subject") or None,
        message_id=(first.get("message-id") or "").strip() or None,
        headers=tuple(headers),
    )


def _decoded(value: object) -> str:
    """A header value unfolded, with encoded words decoded when there are any."""
    if not isinstance(value, str):  # compat32 hands back Header objects for 8-bit junk
        value = str(value)
    text = value.replace("\r\n", "").replace("\n", "").strip()
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        return text


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as the store keeps it: raw bytes and the headers read on arrival.

    ``id`` is mailfleet's stable id for the message: a handler that runs twice
    for the same message (delivery is at-least-once) sees the same ``id``.
    Handlers get :class:`mailfleet.InboundMessage`, which adds the parsed MIME.
    """

    id: str
    grant_id: str
    raw: bytes
    sender: str | None
    recipients: tuple[str, ...]
    subject: str | None
    message_id: str | None
    received_at: datetime
    attempt: int = 1
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    thread_id: str | None = None
    """The conversation this message belongs to (Message-ID / References / subject)."""
