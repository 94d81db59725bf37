"""Reports that come back: bounces and complaints read, matched to their send, acted on.

The MX hands over every message addressed to a bounce address
(``bounces+TOKEN@domain`` of a registered domain, or ``bounces@domain`` for
feedback loops) and every message to a grant that looks automatic (an empty
envelope sender, a ``multipart/report``). :meth:`Feedback.receive` reads it
(:func:`~mailfleet.mail.read_report`), finds the send by its VERP token
(or, for a report that names none, its original Message-ID), and records
each failed recipient as every bounce is recorded (event, suppression,
``on_bounce`` / ``on_complaint``), with the
report kept beside it. A report that names no send of the application — an
unknown or forged token — is kept, unattributed, and acts on nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import anyio.to_thread

from ..model.deliverability import Bounce, BounceClass, BounceReason, Complaint
from ..store import feedback
from ..store.feedback import Failure, SendRef
from ..store.scope import Scope, Tx
from ..store.tables import utcnow

if TYPE_CHECKING:  # mail is imported by the first report, not by every fleet
    from ..mail.reports import FailedRecipient, Report

__all__ = ["Feedback", "Taken"]

log = logging.getLogger("mailfleet.feedback")

_ACTIONABLE = ("bounce", "complaint")


@dataclass(frozen=True, slots=True)
class Taken:
    """What became of a report: whether it was taken, what it was, and its send."""

    taken: bool
    kind: str
    send: SendRef | None = None
    failures: int = 0


class Feedback:
    """Takes the reports the MX receives; one per fleet."""

    def __init__(
        self, scope: Scope, *, soft_bounce_limit: int, committed: Callable[[set[str]], None]
    ) -> None:
        self._scope = scope
        self._soft_bounce_limit = soft_bounce_limit
        self._committed = committed

    async def receive(
        self,
        raw: bytes,
        *,
        recipient: str,
        source_key: str | None = None,
        grant_id: str | None = None,
    ) -> Taken:
        """Read and record a report sent to ``recipient``.

        Addressed to a bounce address (``grant_id`` None), it is always taken:
        kept, and acted on when it names a send. Addressed to a grant, it is
        taken only when it is a bounce or complaint about one of that grant's
        own sends; otherwise ``taken`` is false and the caller delivers it as
        ordinary mail.
        """
        from ..mail.bounces import read_report  # imported by the first report

        report = await anyio.to_thread.run_sync(
            partial(read_report, raw, envelope_recipients=(recipient,))
        )
        actionable = report.kind.value in _ACTIONABLE
        if grant_id is not None and not actionable:
            return Taken(False, report.kind.value)

        def work(tx: Tx) -> tuple[Taken, set[str]]:
            if source_key is not None and feedback.report_seen(tx, source_key) is not None:
                return Taken(True, report.kind.value), set()  # a retried delivery: taken before
            send = None
            if actionable:
                # A report that names a token is matched by it alone: Message-IDs are
                # no secret (every recipient has one), tokens are.
                send = feedback.find_send(
                    tx,
                    verp_token=report.verp_token,
                    header_message_id=None if report.verp_token else report.original_message_id,
                    grant_id=grant_id,
                )
            if grant_id is not None and (send is None or send.grant_id != grant_id):
                return Taken(False, report.kind.value), set()
            failures = [] if send is None else _failures(report, send)
            feedback.store_report(
                tx,
                recipient=recipient,
                raw=raw,
                summary=report.as_json(),
                send=send,
                source_key=source_key,
            )
            given = feedback.record_failures(
                tx, failures, soft_bounce_limit=self._soft_bounce_limit
            )
            return Taken(True, report.kind.value, send, len(failures)), given

        taken, given = await self._scope.write(work)
        if given:
            self._committed(given)
        _log(taken, recipient, report.verp_token)
        return taken


def _failures(report: Report, send: SendRef) -> list[Failure]:
    """One failure per failed recipient of the send the report names.

    A recipient the send was not addressed to (a forwarding address) counts
    as the send's only recipient when it had one; otherwise it is left out:
    a report never suppresses an address we did not mail. A report that
    says not whom (or that redacts it) names the send's only recipient.
    """
    sent = list(send.recipients)
    targets: dict[str, FailedRecipient | None] = {}
    for failed in report.recipients:
        address = failed.address if failed.address in sent else None
        if address is None and len(sent) == 1:
            address = sent[0]
        if address is not None:
            targets.setdefault(address, failed)
    if not report.recipients and len(sent) == 1:
        targets[sent[0]] = None
    now = utcnow()
    records: list[Bounce | Complaint] = []
    for address, named in targets.items():
        if report.kind.value == "complaint":
            records.append(
                Complaint(
                    address,
                    report.feedback_type or "abuse",
                    send.header_message_id,
                    send.outbound_id,
                    now,
                )
            )
            continue
        records.append(
            Bounce(
                recipient=address,
                bounce_class=BounceClass.SOFT if named is None else named.bounce_class,
                reason=BounceReason.UNKNOWN if named is None else named.reason,
                status=None if named is None else named.status,
                reply_code=None if named is None else named.reply_code,
                diagnostic=None if named is None else named.diagnostic,
                message_id=send.header_message_id,
                outbound_id=send.outbound_id,
                source="report",
                received_at=now,
            )
        )
    return [Failure(send, record) for record in records]


def _log(taken: Taken, recipient: str, token: str | None) -> None:
    if not taken.taken:
        return
    if taken.send is None:
        if taken.kind in ("bounce", "complaint"):
            log.warning(
                "%s to %s names no send of this application (token %s): kept, nothing suppressed",
                taken.kind,
                recipient,
                token or "none",
                extra={"recipient": recipient, "kind": taken.kind},
            )
        else:
            log.info("%s to %s kept", taken.kind, recipient, extra={"kind": taken.kind})
        return
    log.info(
        "%s about message %s of grant %s: %d recipient(s) recorded",
        taken.kind,
        taken.send.message_id,
        taken.send.grant_id,
        taken.failures,
        extra={
            "grant_id": taken.send.grant_id,
            "message_id": taken.send.message_id,
            "kind": taken.kind,
        },
    )
