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


class BounceClass(StrEnum):
    """Whether a failure is permanent for the address."""

    HARD = "hard"
    """The address or its domain does not exist or has moved (or, for a
    complaint, the recipient asked for no more mail): suppress it."""
    SOFT = "soft"
    """Every other failure: full mailbox, spam or policy block, rate limit, expiry..."""


class BounceReason(StrEnum):
    """Why a recipient failed; hard for the first three, soft for the rest,
    and ``unknown`` hard when the failure is permanent (5.x.x / 5xx)."""

    USER_UNKNOWN = "user_unknown"
    HOST_UNKNOWN = "host_unknown"
    HAS_MOVED = "has_moved"
    MAILBOX_FULL = "mailbox_full"
    MAILBOX_DISABLED = "mailbox_disabled"
    MESSAGE_TOO_BIG = "message_too_big"
    SPAM = "spam"
    BLOCKED = "blocked"
    POLICY = "policy"
    RELAY_DENIED = "relay_denied"
    VIRUS = "virus"
    RATE_LIMITED = "rate_limited"
    EXPIRED = "expired"
    AUTH_FAILURE = "auth_failure"
    NETWORK_ERROR = "network_error"
    SYSTEM_ERROR = "system_error"
    COMPLAINT = "complaint"
    UNKNOWN = "unknown"


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
