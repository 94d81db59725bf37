"""Threading keys: what the store needs to put a message in its conversation.

:func:`thread_keys` derives them from the headers read on arrival
(:func:`~mailfleet.mail.headers.parse_headers`; no MIME parse on the delivery
path). The runtime hands them to the store, which assigns the thread in the
transaction that stores the message (``store/threads.py``), always within one
grant's mailbox (never across grants: a Message-ID is chosen by the sender, so
anyone can cite one, and must not be able to join someone else's thread by
doing so):

1. **By reference.** For each id of :attr:`ThreadKeys.references`, most
   recent first (In-Reply-To, then References from last to first), look for a
   stored message of the grant with that Message-ID; the first hit gives the
   thread. Thanks to the most-recent-first order, a missing parent is skipped
   and an older ancestor still matches.
2. **By subject.** Else, only when :attr:`ThreadKeys.is_reply` (the message
   cites ids, or its subject has a reply prefix): the most recent thread of
   the grant with the same :attr:`ThreadKeys.subject` (normalised, non-empty)
   among the messages of the last 30 days. This catches replies from clients
   and gateways that drop the threading headers; a fresh message with a
   common subject ("Hello") never joins an old thread this way.
3. Else a new thread.

Replies mailfleet sends carry :func:`reply_references` and join their
parent's thread.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..model.errors import InvalidInput
from ..model.messages import MessageHeaders
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


class ThreadKeys(NamedTuple):
    """The keys that place a message in a thread (see the module's algorithm).

    ``references``: the ids the message cites, most recent first (the first id
    of In-Reply-To, then References from last to first), without repeats, its
    own Message-ID, or ids :func:`usable_id` refuses.
    ``subject``: :func:`~mailfleet.mail.parse.normalize_subject` of its
    subject, None when that is empty.
    ``is_reply``: it cites ids, or its subject has a reply prefix.
    """

    references: tuple[str, ...]
    subject: str | None
    is_reply: bool


def thread_keys(headers: MessageHeaders) -> ThreadKeys:
    """The threading keys of a message, from the headers read on arrival."""
    in_reply_to = references = ""
    for name, value in headers.headers:  # the first of each field counts
        lowered = name.lower()
        if lowered == "in-reply-to" and not in_reply_to:
            in_reply_to = value
        elif lowered == "references" and not references:
            references = value
    cited = _IDS.findall(in_reply_to)[:1]
    cited += reversed(_IDS.findall(references))
    own = headers.message_id
    kept = tuple(i for i in dict.fromkeys(cited) if i != own and usable_id(i))
    return ThreadKeys(
        references=kept,
        subject=normalize_subject(headers.subject) or None,
        is_reply=bool(kept) or has_reply_prefix(headers.subject),
    )


_IDS = re.compile(r"<[^<>\s]+>")


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
