"""Inbound mail as handlers see it (headers parsed; the full MIME model comes with mail/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import getaddresses, parseaddr

__all__ = ["InboundMessage", "MessageHeaders", "parse_headers"]


@dataclass(frozen=True, slots=True)
class MessageHeaders:
    """The envelope-independent facts read from a message's header block."""

    sender: str | None
    recipients: tuple[str, ...]
    subject: str | None
    message_id: str | None
    headers: tuple[tuple[str, str], ...]


def parse_headers(raw: bytes) -> MessageHeaders:
    """Read the header block of ``raw``; malformed headers never raise."""
    parsed = BytesHeaderParser(policy=default_policy).parsebytes(raw)
    headers = tuple((name, str(value)) for name, value in parsed.items())

    def first(name: str) -> str | None:
        try:
            value = parsed.get(name)
        except Exception:  # a header the parser could not make sense of
            return None
        return None if value is None else str(value).strip() or None

    sender = first("From")
    recipients = [
        address for _, address in getaddresses([first(n) or "" for n in ("To", "Cc")]) if address
    ]
    return MessageHeaders(
        sender=parseaddr(sender)[1] or None if sender else None,
        recipients=tuple(recipients),
        subject=first("Subject"),
        message_id=first("Message-ID"),
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message delivered to a grant.

    ``id`` is mailfleet's stable id for the message: a handler that runs twice
    for the same message (delivery is at-least-once) sees the same ``id``.
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
