"""Mail as bytes: reading headers, parsing MIME, threading keys, building messages.

Pure functions over the stdlib ``email`` package; this layer imports nothing
of mailfleet but :mod:`mailfleet.model`.

- :func:`parse_headers` reads the header block on arrival, fast, and never raises.
- :func:`parse_message` reads any bytes into a :class:`ParsedMessage` and never
  raises: what was wrong is listed in its ``defects``.
- :func:`thread_keys` gives, from those headers, the keys the store threads a message by.
- :func:`build_message` makes a 7-bit clean, CRLF message with its Message-ID.
"""

from __future__ import annotations

from .build import BuiltMessage, OutgoingAttachment, build_message
from .headers import parse_headers
from .parse import (
    Attachment,
    Mailbox,
    ParsedMessage,
    has_reply_prefix,
    normalize_subject,
    parse_message,
)
from .threads import ThreadKeys, reply_references, thread_keys

__all__ = [
    "Attachment",
    "BuiltMessage",
    "Mailbox",
    "OutgoingAttachment",
    "ParsedMessage",
    "ThreadKeys",
    "build_message",
    "has_reply_prefix",
    "normalize_subject",
    "parse_headers",
    "parse_message",
    "reply_references",
    "thread_keys",
]
