"""Amazon SES notifications delivered as mail: the JSON of a Bounce, Complaint or Delivery.

SES publishes its feedback through SNS; an e-mail subscription receives the
notification as a JSON body, either bare (``{"notificationType": "Bounce",
...}`` or the event-publishing ``{"eventType": ...}``) or wrapped in the SNS
envelope (``{"Type": "Notification", "Message": "<the JSON as a string>"}``).
:func:`read_ses` reads either into an :class:`SesReport`; the
``bounceType``/``bounceSubType`` refine the class :func:`classify_failure`
gives (a Transient bounce is soft, a Permanent one with nothing more said is
hard, NoEmail and Suppressed are an unknown user).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .dsn import typed_value
from .reasons import classify_failure, find_reply_code, find_status
from .reportaddr import normalise
from .reports import BounceClass, BounceReason, FailedRecipient, ReportKind

__all__ = ["SesReport", "read_ses"]

MAX_JSON = 1_000_000
_DECODER = json.JSONDecoder()
_SUBTYPES = {
    "noemail": BounceReason.USER_UNKNOWN,
    "suppressed": BounceReason.USER_UNKNOWN,
    "onaccountsuppressionlist": BounceReason.USER_UNKNOWN,
    "mailboxfull": BounceReason.MAILBOX_FULL,
    "messagetoolarge": BounceReason.MESSAGE_TOO_BIG,
    "contentrejected": BounceReason.POLICY,
    "attachmentrejected": BounceReason.POLICY,
}


@dataclass(slots=True)
class SesReport:
    """What an SES notification says."""

    kind: ReportKind
    recipients: list[FailedRecipient] = field(default_factory=list)
    delayed: list[FailedRecipient] = field(default_factory=list)
    feedback_type: str | None = None
    message_id: str | None = None
    reporting_mta: str | None = None
    mail_texts: list[str] = field(default_factory=list)
    """The ``mail`` object's source and headers, where a VERP token may be."""


def _load(text: str) -> dict[str, Any] | None:
    """The JSON object that opens ``text`` (SNS appends an unsubscribe footer)."""
    body = text.lstrip()
    if not body.startswith("{") or len(body) > MAX_JSON:
        return None
    try:
        document, _ = _DECODER.raw_decode(body)
        if isinstance(document, dict) and isinstance(document.get("Message"), str):
            document, _ = _DECODER.raw_decode(document["Message"].lstrip())
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _recipient(
    item: dict[str, Any], bounce_type: str, subtype: str, action: str
) -> FailedRecipient | None:
    address = normalise(_str(item.get("emailAddress")) or "")
    if address is None:
        return None
    diagnostic = typed_value(_str(item.get("diagnosticCode")))
    status = find_status(_str(item.get("status")) or "", failures_only=False) or (
        find_status(diagnostic) if diagnostic else None
    )
    reply_code = find_reply_code(diagnostic) if diagnostic else None
    reason, klass = classify_failure(status, reply_code, diagnostic or "")
    if reason is BounceReason.UNKNOWN and subtype in _SUBTYPES:
        reason = _SUBTYPES[subtype]
    if bounce_type == "transient":
        klass = BounceClass.SOFT
    elif bounce_type == "permanent" and reason in (BounceReason.UNKNOWN, BounceReason.USER_UNKNOWN):
        klass = BounceClass.HARD
    return FailedRecipient(
        address=address,
        status=status,
        reply_code=reply_code,
        reason=reason,
        bounce_class=klass,
        diagnostic=diagnostic[:1000] if diagnostic else None,
        action=(_str(item.get("action")) or action).lower(),
    )


def read_ses(text: str) -> SesReport | None:
    """The SES notification in ``text`` (a message's body), or None when it is not one."""
    document = _load(text)
    if document is None:
        return None
    kind = (_str(document.get("notificationType")) or _str(document.get("eventType")) or "").lower()
    if kind not in ("bounce", "complaint", "delivery", "deliverydelay"):
        return None
    mail = _dict(document.get("mail"))
    common = _dict(mail.get("commonHeaders"))
    message_id = _str(common.get("messageId"))
    for header in _list(mail.get("headers")):
        if message_id is None and str(header.get("name", "")).lower() == "message-id":
            message_id = _str(header.get("value"))
    report = SesReport(kind=ReportKind.MESSAGE)
    report.message_id = message_id.strip().strip("<>") if message_id else None
    report.mail_texts = [_str(mail.get("source")) or "", json.dumps(mail.get("headers", []))]
    if kind == "bounce":
        bounce = _dict(document.get("bounce"))
        bounce_type = (_str(bounce.get("bounceType")) or "").lower()
        subtype = (_str(bounce.get("bounceSubType")) or "").lower()
        report.kind = ReportKind.BOUNCE
        report.reporting_mta = typed_value(_str(bounce.get("reportingMTA")))
        for item in _list(bounce.get("bouncedRecipients")):
            recipient = _recipient(item, bounce_type, subtype, "failed")
            if recipient is not None:
                report.recipients.append(recipient)
    elif kind == "deliverydelay":
        delay = _dict(document.get("deliveryDelay"))
        for item in _list(delay.get("delayedRecipients")):
            recipient = _recipient(item, "transient", "", "delayed")
            if recipient is not None:
                report.delayed.append(recipient)
    elif kind == "complaint":
        complaint = _dict(document.get("complaint"))
        report.kind = ReportKind.COMPLAINT
        report.feedback_type = (_str(complaint.get("complaintFeedbackType")) or "abuse").lower()
        for item in _list(complaint.get("complainedRecipients")):
            address = normalise(_str(item.get("emailAddress")) or "")
            if address is not None:
                report.recipients.append(
                    FailedRecipient(
                        address,
                        None,
                        None,
                        BounceReason.COMPLAINT,
                        BounceClass.HARD,
                        report.feedback_type,
                    )
                )
    else:
        report.kind = ReportKind.DELIVERED
    return report
