"""What a delivery report says: the types of bounce, complaint and auto-reply parsing.

:func:`~mailfleet.mail.read_report` reads any message into a :class:`Report`:
its :class:`ReportKind` (a bounce, a complaint, an auto-reply, a delivery
notice, or an ordinary message), the recipients that failed (or were
complained about), and what names the send it belongs to (the original
Message-ID, the VERP token of ``bounces+TOKEN@domain``).

:meth:`Report.as_json` is the stable form ``mailfleet inspect`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..model.deliverability import BounceClass, BounceReason

__all__ = [
    "BounceClass",
    "BounceReason",
    "FailedRecipient",
    "Report",
    "ReportKind",
]


class ReportKind(StrEnum):
    """What kind of message a report is."""

    BOUNCE = "bounce"
    """A delivery failure (DSN, RFC 3464, or an MTA's own form): ``recipients`` failed."""
    COMPLAINT = "complaint"
    """A feedback report (ARF, RFC 5965, or a provider's loop): a recipient complained."""
    AUTO_REPLY = "auto_reply"
    """An auto-reply or vacation notice (RFC 3834 and the common forms)."""
    DELIVERED = "delivered"
    """A delivery or relay success notice."""
    MESSAGE = "message"
    """Anything else: ordinary mail, or a delay warning (see ``Report.delayed``)."""


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient of a report: who, what the receiver said, and what it means."""

    address: str
    """The recipient's address, lower case (the original recipient when known)."""
    status: str | None
    """The enhanced status code (RFC 3463), e.g. ``"5.1.1"``, when there is one."""
    reply_code: int | None
    """The SMTP reply code, e.g. ``550``, when there is one."""
    reason: BounceReason
    bounce_class: BounceClass
    diagnostic: str | None
    """The receiver's own words (the Diagnostic-Code, or the bounce's text)."""
    remote_mta: str | None = None
    """The MTA that refused the message, when named."""
    action: str = "failed"
    """RFC 3464 action: ``failed``, ``delayed``, ``delivered``, ``relayed``, ``expanded``."""

    def as_json(self) -> dict[str, Any]:
        """The stable JSON form (``mailfleet inspect``)."""
        return {
            "address": self.address,
            "status": self.status,
            "reply_code": self.reply_code,
            "reason": self.reason.value,
            "class": self.bounce_class.value,
            "diagnostic": self.diagnostic,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """What a message says about the delivery of an earlier one."""

    kind: ReportKind
    recipients: tuple[FailedRecipient, ...] = ()
    """Failed recipients (bounce) or the complained-about recipient (complaint)."""
    delayed: tuple[FailedRecipient, ...] = ()
    """Recipients only delayed so far: a soft signal, never a failure."""
    reporting_mta: str | None = None
    original_message_id: str | None = None
    """The Message-ID of the message reported on, without angle brackets."""
    verp_token: str | None = None
    """``TOKEN`` of the ``bounces+TOKEN@domain`` the report was sent to or names."""
    feedback_type: str | None = None
    """For a complaint: ``abuse``, ``fraud``, ``virus``, ``other``... (RFC 5965)."""
    defects: tuple[str, ...] = ()
    """What was wrong with the report itself (missing parts, bad charset...)."""

    def as_json(self) -> dict[str, Any]:
        """The stable JSON form ``mailfleet inspect`` prints (without ``file``)."""
        document: dict[str, Any] = {
            "kind": self.kind.value,
            "recipients": [recipient.as_json() for recipient in self.recipients],
            "original_message_id": self.original_message_id,
            "verp_token": self.verp_token,
        }
        if self.delayed:
            document["delayed"] = [recipient.as_json() for recipient in self.delayed]
        if self.feedback_type is not None:
            document["feedback_type"] = self.feedback_type
        if self.reporting_mta is not None:
            document["reporting_mta"] = self.reporting_mta
        return document
