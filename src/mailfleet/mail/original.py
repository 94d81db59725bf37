"""The message a report is about: attached, or quoted in the report's text.

A report carries the original as a ``message/rfc822`` (or ``message/global``)
part, as its headers only (``text/rfc822-headers``), or quoted after a marker
line in its text, possibly indented, ``>``-quoted or truncated.
:func:`attached_original` and :func:`quoted_original` read its header block
into an :class:`Original`; :func:`find_message_id` is the last resort, a
Message-ID line anywhere in a text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .mimeparts import Headers, Part, split_head, transfer_decoded
from .reportaddr import addresses_in

__all__ = [
    "ORIGINAL_TYPES",
    "Original",
    "attached_original",
    "find_message_id",
    "message_id_of",
    "quoted_original",
]

ORIGINAL_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "message/rfc822-headers",
        "message/global-headers",
        "text/rfc822",
        "message/partial",
    }
)
"""Content types of a part that is the original message or its headers."""

_MESSAGE_FIELDS = ("message-id", "from", "to", "subject", "received", "date")
_BRACKETED = re.compile(r"<([^<>\s]+)>")
_MESSAGE_ID_LINE = re.compile(
    r"^[ \t>]*Message-ID[ \t]*:[ \t]*(?:\r?\n[ \t]+)?<?([^\s<>]+@[^\s<>]+|[^\s<>]{6,})>?",
    re.I | re.M,
)
_QUOTE = re.compile(r"^(?:[ \t]*>)+[ \t]?")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,60}[ \t]*:")
MAX_QUOTED = 32_000


@dataclass(slots=True)
class Original:
    """The original message's header block, and what a report needs of it."""

    headers: Headers
    message_id: str | None

    def addresses(self, *names: str) -> list[str]:
        """The addresses of the named fields (lower case), in order."""
        return addresses_in(value for name in names for value in self.headers.get_all(name))

    @property
    def senders(self) -> list[str]:
        """Who sent it: From, Sender, Return-Path and Reply-To addresses."""
        return self.addresses("from", "sender", "return-path", "reply-to")


def message_id_of(value: str | None) -> str | None:
    """A Message-ID value without its angle brackets (None when empty)."""
    if not value:
        return None
    match = _BRACKETED.search(value)
    text = match[1] if match else value.strip().strip("<>").strip()
    return text[:998] or None


def _original(headers: Headers) -> Original | None:
    if not headers.fields:
        return None
    return Original(headers, message_id_of(headers.get("message-id")))


def attached_original(parts: list[Part], defects: list[str]) -> Original | None:
    """The original from the report's first message/rfc822 or rfc822-headers part."""
    for part in parts:
        if part.ctype in ORIGINAL_TYPES:
            found = _original(split_head(transfer_decoded(part, defects).lstrip(b"\r\n"))[0])
            if found is not None:
                return found
            if any(name in part.headers for name in _MESSAGE_FIELDS):
                return _original(part.headers)  # its header block runs on into the part's own
            defects.append(f"the {part.ctype} part has no header block")
    return None


def quoted_original(text: str | None) -> Original | None:
    """The original quoted in a text bounce (the text after its marker line)."""
    if not text:
        return None
    lines = [_QUOTE.sub("", line) for line in text[:MAX_QUOTED].splitlines()]
    start = next((i for i, line in enumerate(lines[:8]) if _FIELD.match(line.strip())), None)
    if start is None:
        return None
    lines = lines[start:]
    indent = len(lines[0]) - len(lines[0].lstrip())
    if indent:
        lines = [line[indent:] if line[:indent].isspace() else line for line in lines]
    return _original(split_head("\n".join(lines).encode("utf-8", "replace"))[0])


def find_message_id(text: str | None) -> str | None:
    """The first Message-ID line in ``text``, without angle brackets."""
    if not text:
        return None
    match = _MESSAGE_ID_LINE.search(text)
    return match[1] if match else None
