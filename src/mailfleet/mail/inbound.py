"""``InboundMessage``: what an agent's ``on_message`` receives.

It is the stored message (raw bytes, the headers read on arrival, the stable
``id``) plus its MIME content, parsed on first use and kept: a handler that
only looks at the subject pays nothing for parsing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from ..model.messages import StoredMessage
from .parse import Attachment, Mailbox, ParsedMessage, parse_message

__all__ = ["InboundMessage", "automatic_reason"]

_STORED_FIELDS = tuple(f.name for f in fields(StoredMessage))


@dataclass(frozen=True, slots=True)
class InboundMessage(StoredMessage):
    """A message delivered to a grant, with its parsed content on demand.

    ``text``, ``html``, ``attachments``, ``cc``, ``reply_to``, ``references``
    and ``defects`` come from :attr:`parsed` (a
    :class:`~mailfleet.mail.ParsedMessage`); malformed MIME never raises, it
    shows up in ``defects``.
    """

    _parsed: ParsedMessage | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_stored(cls, stored: StoredMessage, **changes: object) -> InboundMessage:
        """The handler's view of a stored message (``changes`` override fields)."""
        values = {name: getattr(stored, name) for name in _STORED_FIELDS}
        values.update(changes)
        return cls(**values)

    @property
    def parsed(self) -> ParsedMessage:
        """The full MIME parse of :attr:`raw`, made once."""
        if self._parsed is None:
            object.__setattr__(self, "_parsed", parse_message(self.raw))
        assert self._parsed is not None
        return self._parsed

    @property
    def was_parsed(self) -> bool:
        """Whether :attr:`parsed` has been computed (its defects are then recorded)."""
        return self._parsed is not None

    @property
    def automatic(self) -> str | None:
        """Why this message must not get an automatic reply (RFC 3834), or None.

        Auto-Submitted other than ``no``, Precedence bulk / junk / list, a
        mailing list (List-Id), or a bounce (empty Return-Path). Read from the
        headers stored on arrival: no parse needed.
        """
        return automatic_reason(self.headers)

    @property
    def text(self) -> str | None:
        """The plain-text body."""
        return self.parsed.text

    @property
    def html(self) -> str | None:
        """The HTML body."""
        return self.parsed.html

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        """Attachments: name, type, size; content on demand."""
        return self.parsed.attachments

    @property
    def from_(self) -> Mailbox | None:
        """The From mailbox, with its display name."""
        return self.parsed.from_

    @property
    def cc(self) -> tuple[Mailbox, ...]:
        """The Cc mailboxes."""
        return self.parsed.cc

    @property
    def reply_to(self) -> tuple[Mailbox, ...]:
        """The Reply-To mailboxes."""
        return self.parsed.reply_to

    @property
    def references(self) -> tuple[str, ...]:
        """The Message-IDs this message refers to."""
        return self.parsed.references

    @property
    def defects(self) -> tuple[str, ...]:
        """Every problem found in the message's MIME."""
        return self.parsed.defects


def automatic_reason(headers: Sequence[tuple[str, str]]) -> str | None:
    """Why a message with these header fields was sent automatically (RFC 3834), or None:
    Auto-Submitted other than ``no``, Precedence bulk / junk / list, a mailing list
    (List-Id), or a bounce (empty Return-Path)."""
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value.strip())
    auto = first.get("auto-submitted", "no").split(";")[0].strip().lower()
    if auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = first.get("precedence", "").lower()
    if precedence in {"bulk", "junk", "list"}:
        return f"Precedence: {precedence}"
    if "list-id" in first:
        return "a mailing list message (List-Id)"
    if first.get("return-path") == "<>":
        return "a bounce (empty Return-Path)"
    return None
