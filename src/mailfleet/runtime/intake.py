"""``Fleet.deliver``: the one inbound entry point, with group commit.

Every transport hands a message to :meth:`Intake.deliver`, which returns only
once the message and its queue entry are committed. Concurrent deliveries
are gathered and committed together in one transaction (group commit), so
the cost of a commit is shared by every message that waited for it. The
same transaction resolves each recipient grant and checks its backlog
against the queue limit: a full queue refuses the message
(:class:`~mailfleet.QueueFull`) and stores nothing of it.

A message that answers a double opt-in confirmation (it cites the
confirmation's Message-ID, comes from the address it was sent to, and is not
automatic, RFC 3834) confirms it in the same transaction, whatever source
brought it; it is stored and handled as any other message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus

from ..model.addresses import parse_address
from ..model.authentication import Authentication
from ..model.errors import GrantNotFound, InvalidInput, QueueFull
from ..model.messages import MessageHeaders, StoredMessage
from ..model.rules import Verdict
from ..model.spam import SpamVerdict, judge, rule_signal
from ..store import consent, grants, queue
from ..store.consent import RepliedConfirmation
from ..store.rules import record_evaluations
from ..store.scope import Scope, Tx
from .batching import FLEET_CLOSED, GroupCommit
from .policy import InboundItem, Screened

if TYPE_CHECKING:
    from ..mail.threads import ThreadKeys  # the mail modules load with the first delivery

Screen = Callable[[Tx, Sequence[InboundItem]], list[Screened]]
"""The inbound rules, in the intake's transaction (``PolicyRules.screen_deliveries``)."""

__all__ = ["Intake"]

log = logging.getLogger("mailfleet.intake")


@dataclass(frozen=True, slots=True)
class _Delivery:
    key: str
    raw: bytes
    source_key: str | None
    headers: MessageHeaders
    authentication: Authentication | None
    mail_from: str | None = None
    spam: SpamVerdict | None = None
    keys: ThreadKeys | None = None
    """Its threading keys, read from ``headers`` before the transaction."""
    replier: str | None = None
    """The sender, when the message may answer a double opt-in confirmation (it cites
    a Message-ID and is not automatic): read before the transaction too."""


class Intake:
    """Commits deliveries in batches (group commit); one background task per fleet."""

    def __init__(
        self,
        scope: Scope,
        *,
        queue_limit: int,
        committed: Callable[[set[str]], None],
        screen: Screen | None = None,
    ) -> None:
        self._scope = scope
        self._screen = screen
        self._limit = queue_limit
        self.committed = committed
        self._backlog = BacklogGauge(queue_limit)
        self._batches: GroupCommit[_Delivery, StoredMessage] = GroupCommit(
            self._commit, closed_error=FLEET_CLOSED
        )

    async def deliver(
        self,
        grant: str,
        raw: bytes,
        *,
        source_key: str | None = None,
        authentication: Authentication | None = None,
        mail_from: str | None = None,
        spam: SpamVerdict | None = None,
        headers: MessageHeaders | None = None,
    ) -> StoredMessage:
        """Store ``raw`` for ``grant`` (id or address); return once committed.

        With a ``source_key``, a message the grant already has under that key
        is returned as it is, and nothing new is queued. ``authentication`` is
        what the MX verified, stored with the message, and ``mail_from`` the
        envelope sender. The inbound rules decide where it is filed; one that
        blocks it raises :class:`~mailfleet.MessageBlocked` (nothing stored).
        ``spam`` is its spam verdict (spam is filed in the ``spam`` folder, for
        ``on_spam``); ``headers`` the header read of ``raw`` when the caller made it
        already.
        """
        from ..mail.headers import parse_headers  # imported by the first delivery
        from ..mail.inbound import automatic_reason
        from ..mail.threads import thread_keys

        # Read here, not in the transaction: the store's writer is not held for it.
        read = parse_headers(raw) if headers is None else headers
        keys = thread_keys(read)
        replier = (
            _normal_sender(read.sender)
            if keys.references and not automatic_reason(read.headers)
            else None
        )
        delivery = _Delivery(
            grant, raw, source_key, read, authentication, mail_from, spam, keys, replier
        )
        return await self._batches.submit(delivery)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit pending deliveries until cancelled."""
        await self._batches.run(task_status=task_status)

    async def _commit(self, batch: Sequence[_Delivery]) -> Sequence[StoredMessage | Exception]:
        outcomes, fresh = await self._scope.write(lambda tx: self._store(tx, batch))
        self.committed({o.grant_id for o in outcomes if isinstance(o, StoredMessage)})
        if log.isEnabledFor(logging.INFO):
            for message in fresh:
                log.info(
                    "received message %s for grant %s: %d bytes, Message-ID %s",
                    message.id,
                    message.grant_id,
                    len(message.raw),
                    message.message_id or "(none)",
                    extra={
                        "grant_id": message.grant_id,
                        "message_id": message.id,
                        "size": len(message.raw),
                        "header_message_id": message.message_id,
                    },
                )
        return outcomes

    def _store(
        self, tx: Tx, batch: Sequence[_Delivery]
    ) -> tuple[list[StoredMessage | Exception], list[StoredMessage]]:
        """Each delivery's outcome, and the messages stored new (not repeats)."""
        from ..mail.threads import thread_keys

        found = grants.grant_ids(tx, {d.key for d in batch})
        grant_ids = {d.key: found[_normal(d.key)] for d in batch if _normal(d.key) in found}
        waiting = self._backlog.bounds(tx, set(grant_ids.values()), incoming=len(batch))
        seen = queue.by_source(
            tx,
            (
                (grant_ids[d.key], d.source_key)
                for d in batch
                if d.source_key is not None and d.key in grant_ids
            ),
        )
        outcomes: list[StoredMessage | Exception | None] = [None] * len(batch)
        new: dict[tuple[str, str] | int, queue.Delivery] = {}  # one per source key
        replies: list[RepliedConfirmation] = []
        slot: dict[int, tuple[str, str] | int] = {}
        screened = self._screened(tx, batch, grant_ids, seen)
        for index, delivery in enumerate(batch):
            grant_id = grant_ids.get(delivery.key)
            if grant_id is None:
                outcomes[index] = GrantNotFound(delivery.key)
                continue
            key: tuple[str, str] | int = (
                (grant_id, delivery.source_key) if delivery.source_key else index
            )
            verdict = screened.get(index)
            if isinstance(key, tuple) and key in seen:
                outcomes[index] = seen[key]  # delivered before: idempotent
            elif verdict is not None and (refusal := verdict.refusal()) is not None:
                outcomes[index] = refusal
            elif key in new:
                slot[index] = key  # the same source key twice in this batch
            elif waiting.get(grant_id, 0) >= self._limit:
                outcomes[index] = QueueFull(grant_id, self._limit)
            else:
                waiting[grant_id] = waiting.get(grant_id, 0) + 1
                keys = delivery.keys or thread_keys(delivery.headers)
                new[key] = queue.Delivery(
                    grant_id,
                    delivery.raw,
                    delivery.source_key,
                    delivery.headers,
                    *keys,
                    authentication=delivery.authentication,
                    folder=(verdict.verdict.folder if verdict else None) or "inbox",
                    read=verdict.verdict.read if verdict else False,
                    spam=_ruled_spam(delivery.spam, verdict.verdict if verdict else None),
                )
                slot[index] = key
                if delivery.replier is not None:
                    replies.append(RepliedConfirmation(grant_id, delivery.replier, keys.references))
        stored = dict(zip(new, queue.enqueue(tx, list(new.values())), strict=True))
        if replies:
            consent.confirm_replies(tx, replies)
        self._backlog.update(waiting)
        for index, key in slot.items():
            outcomes[index] = stored[key]
        if screened:
            matched = [
                e
                for index, verdict in screened.items()
                for e in (
                    [replace(e, message_ref=stored[slot[index]].id) for e in verdict.evaluations]
                    if index in slot and slot[index] in stored
                    else verdict.evaluations
                    if verdict.verdict.blocked is not None
                    else ()
                )
            ]
            record_evaluations(tx, matched)
        done = [o if o is not None else RuntimeError("not stored") for o in outcomes]
        return done, list(stored.values())

    def _screened(
        self,
        tx: Tx,
        batch: Sequence[_Delivery],
        grant_ids: dict[str, str],
        seen: dict[tuple[str, str], StoredMessage],
    ) -> dict[int, Screened]:
        """The inbound rules' verdicts on the batch's new deliveries that matched a rule."""
        if self._screen is None:
            return {}
        asked = [
            index
            for index, d in enumerate(batch)
            if d.key in grant_ids
            and not (d.source_key and (grant_ids[d.key], d.source_key) in seen)
        ]
        verdicts = self._screen(
            tx,
            [
                InboundItem(
                    grant_ids[batch[i].key],
                    batch[i].headers,
                    batch[i].authentication,
                    batch[i].mail_from,
                )
                for i in asked
            ],
        )
        return {i: v for i, v in zip(asked, verdicts, strict=True) if v.verdict}


def _ruled_spam(spam: SpamVerdict | None, verdict: Verdict | None) -> SpamVerdict | None:
    """The spam verdict with the decisive signal of each ``mark_spam`` rule that
    matched (:func:`~mailfleet.model.spam.rule_signal`, once per rule: a recipient
    scorer may have added it at the MX already), judged again at its threshold."""
    marks = [m for m in verdict.matches if m.action == "mark_spam"] if verdict else []
    if not marks:
        return spam
    signals = list(spam.signals) if spam is not None else []
    named = {signal.name for signal in signals}
    signals.extend(
        rule_signal(m.rule_id, name=m.rule) for m in marks if f"rule:{m.rule_id}" not in named
    )
    return judge(signals, spam.threshold if spam is not None else None)


class BacklogGauge:
    """Upper bounds of grants' ready backlogs, so that a batch rarely counts them.

    Counting a grant's ready entries costs time in proportion to its backlog.
    Workers only shrink a backlog, so the last count plus what this intake
    queued since is an upper bound; it is trusted for ``max_age`` seconds,
    and recounted sooner only when it comes near ``limit``. Entries other
    processes queue (or dead letters replayed) are seen at the next count.
    Used from the intake's one writer at a time.
    """

    def __init__(self, limit: int, *, max_age: float = 1.0) -> None:
        self._limit = limit
        self._max_age = max_age
        self._bounds: dict[str, tuple[float, int]] = {}  # grant id -> (counted at, bound)

    def bounds(self, tx: Tx, grant_ids: set[str], *, incoming: int) -> dict[str, int]:
        """Each grant's backlog bound, counting those whose bound is old or near the limit."""
        now = time.monotonic()
        known: dict[str, int] = {}
        for grant_id in grant_ids:
            hit = self._bounds.get(grant_id)
            if hit and now - hit[0] < self._max_age and hit[1] + incoming < self._limit:
                known[grant_id] = hit[1]
        stale = grant_ids - known.keys()
        if stale:
            counted = queue.backlog(tx, stale)
            for grant_id in stale:
                known[grant_id] = counted.get(grant_id, 0)
                self._bounds[grant_id] = (now, known[grant_id])
        return known

    def update(self, waiting: dict[str, int]) -> None:
        """Record the backlogs after a commit: the counts of :meth:`bounds` plus what was queued."""
        if len(self._bounds) > 100_000:
            self._bounds.clear()
        for grant_id, count in waiting.items():
            counted_at = self._bounds.get(grant_id, (0.0, 0))[0]
            self._bounds[grant_id] = (counted_at, count)


def _normal_sender(sender: str | None) -> str | None:
    """The From address in normal form, or None when there is none or it is not valid."""
    if not sender:
        return None
    try:
        return str(parse_address(sender))
    except InvalidInput:
        return None


def _normal(key: str) -> str:
    """A grant key as the store matches it: ids as they are, addresses lower-cased."""
    return key.strip().lower() if "@" in key else key
