"""Threading keys: what the store needs to put a message in its conversation.

Pure functions; the lookups are the store's. The intended algorithm, run in
the transaction that stores an inbound or outbound message, and always scoped
to one grant's mailbox (never across grants: a Message-ID is chosen by the
sender, so anyone can cite one, and must not be able to join someone else's
thread by doing so):

1. **By reference.** For each id of :attr:`ThreadKeys.references`, most
   recent first (In-Reply-To, then References from last to first), look for a
   stored message of the grant with that Message-ID; the first hit gives the
   thread. Thanks to the most-recent-first order, a missing parent is skipped
   and an older ancestor still matches.
2. **Adoption.** Else, if :attr:`ThreadKeys.message_id` is cited by stored
   messages of the grant (a reply that arrived before its parent), join their
   thread.
3. **By subject.** Else, only when :attr:`ThreadKeys.is_reply` (the message
   cites ids that were not found, or its subject has a reply prefix): the
   most recently active thread of the grant whose normalised subject equals
   :attr:`ThreadKeys.subject` (non-empty), that shares at least one
   participant other than the grant itself, and whose last message is within
   a window (30 days suggested). This catches replies from clients and
   gateways that drop the threading headers. A fresh message with a common
   subject ("Hello") never joins an old thread this way.
4. Else a new thread.

The store indexes Message-ID per grant, the cited ids per message (for 2), and
(grant, normalised subject, last activity) per thread (for 3).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.errors import InvalidInput
from .parse import ParsedMessage, has_reply_prefix, normalize_subject

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_REFERENCES",
    "ThreadKeys",
    "reply_references",
    "thread_keys",
    "usable_id",
]

MAX_REFERENCES = 20
"""A reply's References header keeps at most this many ids: the root and the latest ones."""

MAX_ID_LENGTH = 250
"""Longer ids are not repeated in a reply's threading headers."""


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    """The keys that place a message in a thread (see the module's algorithm).

    ``references``: the ids the message cites, most recent first (In-Reply-To,
    then References from last to first), without repeats nor its own id.
    ``subject``: :func:`~mailfleet.mail.parse.normalize_subject` of its subject.
    ``participants``: the normal form of its From, To, Cc and Reply-To
    addresses (invalid ones left out).
    """

    message_id: str | None
    references: tuple[str, ...]
    subject: str
    is_reply: bool
    participants: frozenset[str]


def thread_keys(message: ParsedMessage) -> ThreadKeys:
    """The threading keys of a parsed message."""
    cited = [message.in_reply_to] if message.in_reply_to else []
    cited.extend(reversed(message.references))
    references = tuple(i for i in dict.fromkeys(cited) if i != message.message_id)
    mailboxes = [message.from_, *message.to, *message.cc, *message.reply_to]
    participants = {box.normalized() for box in mailboxes if box is not None}
    return ThreadKeys(
        message_id=message.message_id,
        references=references,
        subject=normalize_subject(message.subject),
        is_reply=bool(references) or has_reply_prefix(message.subject),
        participants=frozenset(p for p in participants if p is not None),
    )


def reply_references(parent: ParsedMessage, *, limit: int = MAX_REFERENCES) -> tuple[str, ...]:
    """The References of a reply to ``parent``, oldest first (RFC 5322 section 3.6.4).

    The parent's References (or, lacking them, its In-Reply-To) followed by the
    parent's Message-ID, without repeats; ids that are not printable ASCII or
    longer than :data:`MAX_ID_LENGTH` are left out. Beyond ``limit`` ids, the
    first (the thread's root) and the ``limit - 1`` most recent are kept.
    """
    if limit < 2:
        raise InvalidInput("limit", "a References chain keeps at least the root and the parent")
    chain = list(parent.references)
    if not chain and parent.in_reply_to:
        chain.append(parent.in_reply_to)
    if parent.message_id:
        chain.append(parent.message_id)
    usable = [i for i in dict.fromkeys(chain) if usable_id(i)]
    if len(usable) > limit:
        usable = usable[:1] + usable[-(limit - 1) :]
    return tuple(usable)


def usable_id(message_id: str) -> bool:
    """Whether an id can be repeated in a header as is: ``<...>``, printable ASCII, not too long."""
    return (
        len(message_id) <= MAX_ID_LENGTH
        and message_id.startswith("<")
        and message_id.endswith(">")
        and all("!" <= c <= "~" for c in message_id)
    )
