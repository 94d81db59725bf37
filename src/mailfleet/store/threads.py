"""Thread assignment: which conversation a new message joins, per grant.

The runtime gives, for each new message, the Message-IDs it refers to (its
In-Reply-To first, then its References, most recent first) and, for a reply,
its normalised subject. A message joins the thread of the most recent
referenced message the grant has; failing that, a reply joins the most
recent thread of the grant with the same normalised subject from the last
``window`` days; failing that, it starts a thread of its own. Batches are
resolved with two indexed queries, and a reply that arrives in the same
batch as its parent still finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .tables import messages_table, new_id, utcnow

__all__ = ["ThreadHint", "assign_threads"]

_messages = messages_table


@dataclass(frozen=True, slots=True)
class ThreadHint:
    """What a new message says about its conversation."""

    grant_id: str
    message_id: str | None
    references: tuple[str, ...] = ()
    subject: str | None = None
    """The normalised subject (stored for every message)."""
    is_reply: bool = False
    """Only replies fall back to the subject to find their thread."""


def assign_threads(
    conn: Connection, hints: Sequence[ThreadHint], *, window: timedelta = timedelta(days=30)
) -> list[str]:
    """A thread id for each hint, in order."""
    referenced = sorted({ref for hint in hints for ref in hint.references})
    by_id: dict[tuple[str, str], str] = {}
    if referenced:
        rows = conn.execute(
            sa.select(_messages.c.grant_id, _messages.c.message_id, _messages.c.thread_id).where(
                _messages.c.message_id.in_(referenced), _messages.c.thread_id.is_not(None)
            )
        )
        by_id = {(g, m): t for g, m, t in rows.all()}
    subjects = sorted({(h.grant_id, h.subject) for h in hints if h.is_reply and h.subject})
    by_subject: dict[tuple[str, str], str] = {}
    if subjects:
        since = utcnow() - window
        rows = conn.execute(
            sa.select(_messages.c.grant_id, _messages.c.thread_subject, _messages.c.thread_id)
            .where(
                _messages.c.grant_id.in_(sorted({g for g, _ in subjects})),
                _messages.c.thread_subject.in_(sorted({t for _, t in subjects})),
                _messages.c.thread_id.is_not(None),
                _messages.c.created_at >= since,
            )
            .order_by(_messages.c.created_at)
        )
        wanted = set(subjects)
        by_subject = {(g, s): t for g, s, t in rows.all() if (g, s) in wanted}  # latest wins
    threads: list[str] = []
    for hint in hints:
        thread = next(
            (by_id[(hint.grant_id, r)] for r in hint.references if (hint.grant_id, r) in by_id),
            None,
        )
        if thread is None and hint.is_reply and hint.subject:
            thread = by_subject.get((hint.grant_id, hint.subject))
        thread = thread or new_id()
        threads.append(thread)
        if hint.message_id:  # later messages of this batch may refer to this one
            by_id[(hint.grant_id, hint.message_id)] = thread
        if hint.subject:
            by_subject[(hint.grant_id, hint.subject)] = thread
    return threads
