"""Stored inbound mail as plain records (headers are read by ``mail/headers.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .authentication import Authentication
from .spam import SpamVerdict

__all__ = ["MessageHeaders", "StoredMessage"]


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
