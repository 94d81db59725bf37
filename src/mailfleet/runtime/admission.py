"""``Admission``: the workspace policy's inbound limits, decided at DATA, and spam.

The MX (``runtime/mx.py``) asks it, once a message has been read, whether
each recipient grant takes it, and with what spam verdict. Replies
(RFC 5321, RFC 3463 enhanced codes):

==============  ==========================================================
450 4.7.1       the grant has received its ``daily_receive_limit`` of
                messages today (UTC); try again tomorrow
552 5.3.4       more attachments than ``max_attachments``, or one larger
                than ``max_attachment_bytes``
554 5.6.1       an attachment whose type is not in ``allowed_attachment_types``
==============  ==========================================================

Storage is checked before, at RCPT and in DATA, by the SMTP server itself
(``452 4.2.2``, from each recipient's room left); the first such refusal of
a grant marks it full here (:meth:`Admission.storage_full`, one
``grant.storage_full`` event per crossing).

**Daily receive limit.** A grant's count is the inbound messages it has
stored since midnight UTC, counted in the store (``messages_by_grant``) at
most once a second per grant and kept up to date in between with what this
process stores. Several MX processes may therefore take up to a second's
worth of messages beyond the limit between them; a single one never does.

**Attachments** need the MIME parse, made only for a message that can have
any (a ``multipart/*`` or non-text top-level type, or a top-level
``Content-Disposition``), in a worker thread when the message is large, so
the event loop never waits for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import anyio.to_thread

from ..model.errors import StoreUnavailable
from ..model.messages import MessageHeaders
from ..model.policy import Policy
from ..model.records import Grant
from ..model.spam import SpamInput, SpamSignal, SpamVerdict
from ..store import storage
from ..store.scope import Scope
from .spam import SpamFilter

__all__ = ["Admission", "RecipientScorer"]

RecipientScorer = Callable[[Grant, SpamInput], Awaitable[Sequence[SpamSignal]]]
"""Signals that depend on the recipient grant (its workspace's inbound rules that
``mark_spam``: :func:`~mailfleet.model.spam.rule_signal`), awaited per recipient."""

log = logging.getLogger("mailfleet.mx")

_PARSE_IN_THREAD = 256 * 1024  # bytes from which the MIME parse leaves the event loop
_FULL_NOTED_FOR = 10.0  # seconds a process waits before marking a grant full again


class Admission:
    """The daily receive limit, the attachment limits and the spam filter, for the MX."""

    def __init__(
        self,
        scope: Scope,
        spam: SpamFilter,
        *,
        cache_seconds: float = 1.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._scope = scope
        self.spam = spam
        self._cache_seconds = cache_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        # grant id -> (counted at, day start, messages stored that day)
        self._counts: dict[str, tuple[float, datetime, int]] = {}
        self._full_noted: dict[str, float] = {}
        self._recipient_scorers: list[RecipientScorer] = []

    def add_recipient_scorer(self, scorer: RecipientScorer) -> None:
        """Add signals per recipient grant (its rules' ``mark_spam``) to every verdict."""
        self._recipient_scorers.append(scorer)

    async def verdict(
        self, grant: Grant, signals: Sequence[SpamSignal], message: SpamInput
    ) -> SpamVerdict:
        """The spam verdict for ``grant``: the message's ``signals`` and the recipient
        scorers' at its workspace's threshold."""
        extra: list[SpamSignal] = []
        for scorer in self._recipient_scorers:
            try:
                extra.extend(await scorer(grant, message))
            except Exception:
                log.exception("a recipient spam scorer failed for grant %s", grant.id)
        return self.spam.verdict(signals, grant.policy, extra)

    async def refusal(self, grant: Grant, data: bytes, headers: MessageHeaders) -> str | None:
        """The reply refusing ``data`` for ``grant`` by its policy's limits, or None."""
        policy = grant.policy
        received = await self._received_today(grant.id)
        if received >= policy.daily_receive_limit:
            return (
                f"450 4.7.1 <{grant.address}>: daily receive limit reached "
                f"({policy.daily_receive_limit} messages a day); try again after 00:00 UTC"
            )
        if _may_have_attachments(headers):
            return await self._attachment_refusal(policy, data)
        return None

    def received(self, grant_id: str) -> None:
        """One more message stored for ``grant_id`` (keeps the daily count current)."""
        hit = self._counts.get(grant_id)
        if hit is not None:
            self._counts[grant_id] = (hit[0], hit[1], hit[2] + 1)

    async def _received_today(self, grant_id: str) -> int:
        now = self._clock()
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        hit = self._counts.get(grant_id)
        moment = time.monotonic()
        if hit is not None and hit[1] == day and moment - hit[0] < self._cache_seconds:
            return hit[2]
        if len(self._counts) > 100_000:
            self._counts.clear()
        counted = await self._scope.read(
            lambda tx: storage.received_since(tx, [grant_id], day).get(grant_id, 0)
        )
        self._counts[grant_id] = (moment, day, counted)
        return counted

    async def _attachment_refusal(self, policy: Policy, data: bytes) -> str | None:
        from ..mail.parse import parse_message

        if len(data) > _PARSE_IN_THREAD:
            parsed = await anyio.to_thread.run_sync(parse_message, data)
        else:
            parsed = parse_message(data)
        attachments = parsed.attachments
        if len(attachments) > policy.max_attachments:
            return (
                f"552 5.3.4 Too many attachments: {len(attachments)} "
                f"(this mailbox takes at most {policy.max_attachments})"
            )
        for attachment in attachments:
            name = attachment.filename or "(unnamed)"
            if attachment.size > policy.max_attachment_bytes:
                return (
                    f"552 5.3.4 Attachment {name} is too big: {attachment.size} bytes "
                    f"(this mailbox takes at most {policy.max_attachment_bytes})"
                )
            if not policy.allows_attachment_type(attachment.content_type):
                return (
                    f"554 5.6.1 Attachment {name} of type {attachment.content_type} is not "
                    f"accepted here (allowed: {', '.join(policy.allowed_attachment_types)})"
                )
        return None

    async def storage_full(self, grant_id: str, *, refused_bytes: int) -> None:
        """Mail for ``grant_id`` was refused for storage: mark it full (one
        ``grant.storage_full`` event per crossing, whichever process refuses)."""
        moment = time.monotonic()
        if moment - self._full_noted.get(grant_id, -_FULL_NOTED_FOR) < _FULL_NOTED_FOR:
            return
        if len(self._full_noted) > 100_000:
            self._full_noted.clear()
        self._full_noted[grant_id] = moment
        try:
            marked = await self._scope.write(
                lambda tx: storage.mark_storage_full(tx, grant_id, refused_bytes=refused_bytes)
            )
        except StoreUnavailable as exc:  # the refusal stands; the mark is tried again later
            self._full_noted.pop(grant_id, None)
            log.warning("could not mark grant %s full: %s", grant_id, exc)
            return
        except Exception:
            self._full_noted.pop(grant_id, None)
            log.exception("could not mark grant %s full", grant_id)
            return
        if marked:
            log.warning(
                "grant %s is out of storage: inbound mail is refused (452 4.2.2)",
                grant_id,
                extra={"grant_id": grant_id},
            )

    def forget(self, grant_id: str) -> None:
        """Drop what is known of ``grant_id`` (its storage changed: deletions)."""
        self._counts.pop(grant_id, None)
        self._full_noted.pop(grant_id, None)


def _may_have_attachments(headers: MessageHeaders) -> bool:
    """Whether the top-level header allows attachments: a multipart or non-text type,
    or a Content-Disposition (a single part sent as an attachment)."""
    content_type = ""
    for name, value in headers.headers:
        lowered = name.lower()
        if lowered == "content-disposition":
            return True
        if lowered == "content-type" and not content_type:
            content_type = value.strip().lower()
    return bool(content_type) and not content_type.startswith("text/")
