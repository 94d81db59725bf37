"""Bounces and complaints, attributed to their send and acted on in one transaction.

Whatever brought it — the relay refusing a recipient, or a report that came
back days later — a failure is recorded here the same way: its event
(``message.bounced`` / ``message.complained``), the suppression it causes
(hard bounce, complaint, or the soft bounces in a row reaching the limit),
and the queue entry that calls the agent's ``on_bounce`` / ``on_complaint``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..model.deliverability import Bounce, BounceClass, Complaint, SuppressionReason
from .reputation import record_outcomes
from .scope import Tx
from .suppressions import NewSuppression, add_soft_bounces, suppress
from .tables import (
    events_table,
    grants_table,
    messages_table,
    new_id,
    outbound_table,
    queue_table,
    reports_table,
    utcnow,
)

__all__ = ["Failure", "SendRef", "find_send", "record_failures", "report_seen", "store_report"]

_out = outbound_table
_messages = messages_table
_grants = grants_table
_events = events_table
_queue = queue_table
_reports = reports_table


@dataclass(frozen=True, slots=True)
class SendRef:
    """The send a bounce or complaint belongs to."""

    outbound_id: int
    grant_id: str
    message_id: str
    """The stored copy of the sent message (its id in the grant's sent folder)."""
    header_message_id: str | None
    recipients: tuple[str, ...]
    """Everyone the send was addressed to."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One recipient of one send that bounced or complained."""

    send: SendRef
    record: Bounce | Complaint


def find_send(
    tx: Tx,
    *,
    verp_token: str | None = None,
    header_message_id: str | None = None,
    grant_id: str | None = None,
) -> SendRef | None:
    """The application's send with this VERP token, or else with this Message-ID
    (of ``grant_id`` when given); None when no send of the application has it."""
    query = (
        sa.select(
            _out.c.id,
            _out.c.grant_id,
            _out.c.message_id,
            _messages.c.message_id.label("header_message_id"),
            _messages.c.recipients,
        )
        .join(_messages, _messages.c.id == _out.c.message_id)
        .where(_out.c.application_id == tx.application_id)
    )
    row = None
    if verp_token:
        row = tx.conn.execute(query.where(_out.c.verp_token == verp_token)).first()
    if row is None and header_message_id:
        wanted = header_message_id.strip().strip("<>")
        by_id = query.where(
            _messages.c.application_id == tx.application_id,
            _messages.c.direction == "out",
            _messages.c.message_id.in_([f"<{wanted}>", wanted]),
        )
        if grant_id is not None:
            by_id = by_id.where(_out.c.grant_id == grant_id)
        row = tx.conn.execute(by_id.order_by(_out.c.id.desc())).first()
    if row is None:
        return None
    return SendRef(
        outbound_id=row.id,
        grant_id=row.grant_id,
        message_id=row.message_id,
        header_message_id=row.header_message_id,
        recipients=tuple(row.recipients),
    )


def record_failures(tx: Tx, failures: Sequence[Failure], *, soft_bounce_limit: int) -> set[str]:
    """Record each failure's event, suppression and handler call; the grants given work.

    ``soft_bounce_limit`` soft bounces in a row suppress an address (0: never).
    """
    if not failures:
        return set()
    workspaces = dict(
        tx.conn.execute(
            sa.select(_grants.c.id, _grants.c.workspace_id).where(
                _grants.c.application_id == tx.application_id,
                _grants.c.id.in_({f.send.grant_id for f in failures}),
            )
        ).all()
    )
    now = utcnow()
    entries: list[dict[str, Any]] = []
    suppressions: list[NewSuppression] = []
    soft: list[tuple[str, int, str]] = []  # address, event id, detail
    for failure in failures:
        send, record = failure.send, failure.record
        if send.grant_id not in workspaces:
            continue  # the grant was deleted since
        payload = _event_payload(failure, workspaces[send.grant_id])
        event_type = "message.bounced" if isinstance(record, Bounce) else "message.complained"
        event_id = tx.conn.execute(
            sa.insert(_events)
            .values(
                application_id=tx.application_id,
                grant_id=send.grant_id,
                type=event_type,
                payload=payload,
                created_at=now,
            )
            .returning(_events.c.id)
        ).scalar_one()
        if isinstance(record, Complaint):
            detail = (
                f"complaint ({record.feedback_type}) about {send.header_message_id or 'a send'}"
            )
            suppressions.append(
                NewSuppression(
                    record.recipient, SuppressionReason.COMPLAINT, detail, None, event_id
                )
            )
        elif record.bounce_class is BounceClass.HARD:
            suppressions.append(
                NewSuppression(
                    record.recipient,
                    SuppressionReason.HARD_BOUNCE,
                    _bounce_detail(record),
                    None,
                    event_id,
                )
            )
        else:
            soft.append((record.recipient, event_id, _bounce_detail(record)))
        entries.append(
            {
                "application_id": tx.application_id,
                "grant_id": send.grant_id,
                "message_id": send.message_id,
                "kind": "bounce" if isinstance(record, Bounce) else "complaint",
                "payload": record.as_payload(),
                "status": "ready",
                "attempts": 0,
                "created_at": now,
            }
        )
    if soft and soft_bounce_limit > 0:
        counts = add_soft_bounces(tx, [address for address, _, _ in soft])
        for address, event_id, detail in soft:
            if counts.get(address, 0) >= soft_bounce_limit:
                suppressions.append(
                    NewSuppression(
                        address,
                        SuppressionReason.SOFT_BOUNCES,
                        f"{counts[address]} soft bounces in a row, the last: {detail}",
                        None,
                        event_id,
                    )
                )
    suppress(tx, suppressions)
    record_outcomes(
        tx,
        [
            (f.send.outbound_id, f.send.grant_id, f.record.recipient, kind)
            for f in failures
            if f.send.grant_id in workspaces and (kind := _reputation_kind(f.record)) is not None
        ],
    )
    if entries:
        tx.conn.execute(sa.insert(_queue), entries)
    return {entry["grant_id"] for entry in entries}


def _reputation_kind(record: Bounce | Complaint) -> str | None:
    """What a failure counts as in the reputation windows: hard bounces and complaints only."""
    if isinstance(record, Complaint):
        return "complaint"
    return "bounce" if record.bounce_class is BounceClass.HARD else None


def report_seen(tx: Tx, source_key: str) -> str | None:
    """The kind of the report already stored under ``source_key`` (a retried delivery)."""
    row = tx.conn.execute(
        sa.select(_reports.c.kind).where(
            _reports.c.application_id == tx.application_id, _reports.c.source_key == source_key
        )
    ).first()
    return None if row is None else str(row.kind)


def store_report(
    tx: Tx,
    *,
    recipient: str,
    raw: bytes,
    summary: dict[str, Any],
    send: SendRef | None,
    source_key: str | None,
) -> str:
    """Keep a report as received, with what it said and the send it was matched to."""
    report_id = new_id()
    tx.conn.execute(
        sa.insert(_reports).values(
            id=report_id,
            application_id=tx.application_id,
            grant_id=None if send is None else send.grant_id,
            outbound_id=None if send is None else send.outbound_id,
            kind=summary["kind"],
            recipient=recipient[:320],
            verp_token=(summary.get("verp_token") or "")[:64] or None,
            original_message_id=summary.get("original_message_id"),
            attributed=send is not None,
            summary=summary,
            source_key=source_key,
            size=len(raw),
            raw=raw,
            created_at=utcnow(),
        )
    )
    return report_id


def _bounce_detail(bounce: Bounce) -> str:
    code = " ".join(str(part) for part in (bounce.reply_code, bounce.status) if part)
    words = f": {bounce.diagnostic}" if bounce.diagnostic else ""
    return f"{bounce.bounce_class.value} bounce, {bounce.reason.value} {code}".strip() + words


def _event_payload(failure: Failure, workspace_id: str) -> dict[str, Any]:
    send, record = failure.send, failure.record
    payload: dict[str, Any] = {
        "grant_id": send.grant_id,
        "workspace_id": workspace_id,
        "message_id": send.message_id,
        "header_message_id": send.header_message_id,
        "outbound_id": send.outbound_id,
        "recipients": [record.recipient],
        "recipient": record.recipient,
    }
    if isinstance(record, Bounce):
        payload.update(
            {
                "class": record.bounce_class.value,
                "bounce": record.bounce_class.value,
                "reason": record.reason.value,
                "status": record.status,
                "code": record.reply_code,
                "response": record.diagnostic,
                "source": record.source,
            }
        )
    else:
        payload["feedback_type"] = record.feedback_type
    return payload
