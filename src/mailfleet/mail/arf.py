"""Complaints: ARF feedback reports (RFC 5965) and the common non-ARF feedback loops.

:func:`read_arf` reads a ``message/feedback-report`` part (Feedback-Type,
User-Agent, Original-Mail-From, Original-Rcpt-To, Reporting-MTA...) with the
original next to it. :func:`read_loop_complaint` recognises the older forms
providers still send: a forwarded original with "This is an email abuse
report", a Microsoft JMRP-style notice (``X-HmXmrOriginalRecipient`` in the
original), a subject like "Abuse report" or "Complaint about message" with
the original attached. Each complained-about recipient comes from
Original-Rcpt-To, else from the original's X-HmXmrOriginalRecipient,
X-Original-To, Delivered-To or To (kept as written when redacted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .dsn import typed_value
from .mimeparts import Part, part_text, split_head
from .original import Original, attached_original, quoted_original
from .reportaddr import normalise
from .reports import BounceClass, BounceReason, FailedRecipient
from .signals import COMPLAINT_PHRASES, Cues

__all__ = ["Complaint", "complained", "read_arf", "read_loop_complaint"]

_RECIPIENT_FIELDS = ("x-hmxmroriginalrecipient", "x-original-to", "delivered-to", "to")
_TOKEN = re.compile(r"[\w.-]+")


@dataclass(slots=True)
class Complaint:
    """What a complaint says, before it becomes a :class:`~.reports.Report`."""

    recipients: tuple[FailedRecipient, ...]
    feedback_type: str
    original: Original | None
    mail_from: str | None = None
    reporting_mta: str | None = None


def complained(address: str, diagnostic: str) -> FailedRecipient:
    """The :class:`FailedRecipient` of a complaint: reason complaint, class hard."""
    return FailedRecipient(
        address=address,
        status=None,
        reply_code=None,
        reason=BounceReason.COMPLAINT,
        bounce_class=BounceClass.HARD,
        diagnostic=diagnostic,
    )


def _raw_recipient(value: str) -> str | None:
    text = value.strip().strip("<>").strip().lower()
    return text[:320] or None


def _recipients(values: list[str], original: Original | None) -> list[str]:
    found: list[str] = []
    for value in values:
        address = normalise(value) or _raw_recipient(value)
        if address and address not in found:
            found.append(address)
    if found or original is None:
        return found
    for name in _RECIPIENT_FIELDS:
        found = original.addresses(name)
        if found:
            return found
        raw = original.headers.get(name)
        if raw and _raw_recipient(raw):
            return [str(_raw_recipient(raw))]
    return []


def read_arf(parts: list[Part], defects: list[str]) -> Complaint | None:
    """The complaint of an ARF report, or None when there is no feedback-report part."""
    report = next((part for part in parts if part.ctype == "message/feedback-report"), None)
    if report is None:
        return None
    text = part_text(report, defects).lstrip("\r\n")
    fields, _ = split_head(text.encode("utf-8", "replace"))
    kind = _TOKEN.search(fields.get("feedback-type") or "")
    feedback_type = kind[0].lower() if kind else "abuse"
    if kind is None:
        defects.append("the feedback report has no Feedback-Type")
    original = attached_original(parts, defects)
    if original is None:
        defects.append("the feedback report carries no original message")
    agent = fields.get("user-agent")
    diagnostic = f"{feedback_type} ({agent})" if agent else feedback_type
    addresses = _recipients(fields.get_all("original-rcpt-to"), original)
    return Complaint(
        recipients=tuple(complained(address, diagnostic) for address in addresses),
        feedback_type=feedback_type,
        original=original,
        mail_from=fields.get("original-mail-from"),
        reporting_mta=typed_value(fields.get("reporting-mta")),
    )


def read_loop_complaint(
    parts: list[Part], cues: Cues, own_text: str, quoted: str | None, defects: list[str]
) -> Complaint | None:
    """The complaint of a non-ARF feedback loop message, or None when it is not one."""
    original = attached_original(parts, defects) or quoted_original(quoted)
    if original is None:
        return None
    microsoft = "x-hmxmroriginalrecipient" in original.headers
    if not (
        microsoft
        or cues.subject_kind == "complaint"
        or cues.fbl_sender
        or COMPLAINT_PHRASES.search(own_text[:20_000].lower())
    ):
        return None
    addresses = _recipients([], original)
    return Complaint(
        recipients=tuple(complained(address, "abuse") for address in addresses),
        feedback_type="abuse",
        original=original,
    )
