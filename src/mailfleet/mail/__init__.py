"""Mail as bytes: reading headers, parsing MIME, threading keys, building messages.

Pure functions over the stdlib ``email`` package; this layer imports nothing
of mailfleet but :mod:`mailfleet.model`.

- :func:`parse_headers` reads the header block on arrival, fast, and never raises.
- :func:`parse_message` reads any bytes into a :class:`ParsedMessage` and never
  raises: what was wrong is listed in its ``defects``.
- :func:`thread_keys` gives, from those headers, the keys the store threads a message by.
- :func:`build_message` makes a 7-bit clean, CRLF message with its Message-ID.
- :func:`read_report` reads any message as a delivery report (:class:`Report`,
  of a :class:`ReportKind`): a bounce, a complaint, an auto-reply, a delivery
  notice or an ordinary message, with its :class:`FailedRecipient` list; it
  never raises.
- :func:`classify_failure` tells why a recipient failed (:class:`BounceReason`)
  and whether that is permanent (:class:`BounceClass`), from the status code,
  the SMTP reply code and the receiver's words.
"""

from __future__ import annotations

from .bounces import read_report
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
from .reasons import classify_failure
from .reports import BounceClass, BounceReason, FailedRecipient, Report, ReportKind
from .threads import ThreadKeys, reply_references, thread_keys

__all__ = [
    "Attachment",
    "BounceClass",
    "BounceReason",
    "BuiltMessage",
    "FailedRecipient",
    "Mailbox",
    "OutgoingAttachment",
    "ParsedMessage",
    "Report",
    "ReportKind",
    "ThreadKeys",
    "build_message",
    "classify_failure",
    "has_reply_prefix",
    "normalize_subject",
    "parse_headers",
    "parse_message",
    "read_report",
    "reply_references",
    "thread_keys",
]
