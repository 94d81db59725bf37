"""Stored mail as plain records (headers are read by ``mail/headers.py``)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .authentication import Authentication
from .errors import InvalidInput
from .spam import SpamVerdict

__all__ = [
    "MessageHeaders",
    "MessageRecord",
    "StoredMessage",
    "ThreadRecord",
    "cursor_of",
    "parse_cursor",
]


def cursor_of(when: datetime, key: str) -> str:
    """The opaque cursor of a list position: the item made at ``when`` with id ``key``."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    text = f"{when.isoformat()}|{key}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def parse_cursor(cursor: str, *, field: str = "after") -> tuple[datetime, str]:
    """The ``(time, id)`` of a cursor :func:`cursor_of` made; InvalidInput otherwise."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        when, key = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
        parsed = datetime.fromisoformat(when)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(field, "not a cursor this list gave", value=cursor) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)), key


@dataclass(frozen=True, slots=True)
class MessageHeaders:
    """The envelope-independent facts read from a message's header block."""

    sender: str | None
    recipients: tuple[str, ...]
    subject: str | None
    message_id: str | None
    headers: tuple[tuple[str, str], ...]


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
    authentication: Authentication | None = field(default=None, repr=False)
    """What the MX verified on arrival (SPF, DKIM, DMARC, the ``Authentication-Results``
    header it added); None for mail that did not come through the MX (IMAP, ``deliver``)."""
    folder: str = "inbox"
    """Where it is filed: ``inbox``, or ``spam`` when its spam score reached the threshold."""
    spam: SpamVerdict | None = field(default=None, repr=False)
    """Its spam score, the threshold it was judged by and the signals found (mail that
    came through the MX); None when it was not scored."""


@dataclass(frozen=True, slots=True)
class MessageRecord:
    """A message of a grant's mailbox as it is listed and read: inbound (``direction``
    ``in``, folder ``inbox`` or ``spam``) or sent (``out``, folder ``sent``).

    ``delivery`` is a sent message's state on its way (``pending``, ``sent``,
    ``bounced``, ``captured``), None for inbound mail; ``send_at`` when a pending
    one is due to leave (epoch seconds). ``raw`` is given when one message is read,
    None in lists.
    """

    id: str
    grant_id: str
    direction: str
    folder: str
    message_id: str | None
    thread_id: str | None
    subject: str | None
    sender: str | None
    recipients: tuple[str, ...]
    size: int
    created_at: datetime
    delivery: str | None = None
    send_at: float | None = None
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    raw: bytes | None = field(default=None, repr=False)

    @property
    def cursor(self) -> str:
        """The cursor that lists the messages after this one (``after=``)."""
        return cursor_of(self.created_at, self.id)


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    """A conversation of a grant: its messages' count, its first subject, when it
    started and when its last message came or left."""

    id: str
    grant_id: str
    subject: str | None
    messages: int
    first_at: datetime
    last_at: datetime
    participants: tuple[str, ...] = ()
    """The senders and recipients of its messages, in the order they first appear."""

    @property
    def cursor(self) -> str:
        """The cursor that lists the threads after this one (``after=``)."""
        return cursor_of(self.last_at, self.id)
