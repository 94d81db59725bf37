"""Deliverability as values: how a failure is classed, why, and the records agents receive.

A bounce or complaint, whether the relay answered it at once or a report
came back days later, reaches the agent's ``on_bounce`` / ``on_complaint``
as a :class:`Bounce` / :class:`Complaint`, an unsubscribe its
``on_unsubscribe`` as an :class:`Unsubscribe`; the suppression list holds
:class:`Suppression` entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "Bounce",
    "BounceClass",
    "BounceReason",
    "Complaint",
    "Suppression",
    "SuppressionReason",
    "Unsubscribe",
]


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


class SuppressionReason(StrEnum):
    """Why an address is on the suppression list."""

    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    SOFT_BOUNCES = "soft_bounces"
    """Soft bounces in a row reached the limit (``soft_bounce_limit``)."""
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Bounce:
    """What ``on_bounce`` receives: one recipient of one send that failed."""

    recipient: str
    bounce_class: BounceClass
    reason: BounceReason
    status: str | None
    """The enhanced status code (``"5.1.1"``), when the receiver gave one."""
    reply_code: int | None
    diagnostic: str | None
    """The receiver's own words."""
    message_id: str | None
    """The Message-ID header of the send that bounced."""
    outbound_id: int
    """The send (``mailfleet outbox show ID``)."""
    source: str
    """``relay`` (the relay refused it) or ``report`` (a DSN came back)."""
    received_at: datetime

    @property
    def hard(self) -> bool:
        """Whether the address is gone (it is now suppressed)."""
        return self.bounce_class is BounceClass.HARD

    def as_payload(self) -> dict[str, Any]:
        """The JSON form stored with the queue entry and the event."""
        return {
            "recipient": self.recipient,
            "class": self.bounce_class.value,
            "reason": self.reason.value,
            "status": self.status,
            "reply_code": self.reply_code,
            "diagnostic": self.diagnostic,
            "header_message_id": self.message_id,
            "outbound_id": self.outbound_id,
            "source": self.source,
            "received_at": self.received_at.isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Bounce:
        """The record back from :meth:`as_payload`."""
        return cls(
            recipient=payload["recipient"],
            bounce_class=BounceClass(payload["class"]),
            reason=BounceReason(payload["reason"]),
            status=payload.get("status"),
            reply_code=payload.get("reply_code"),
            diagnostic=payload.get("diagnostic"),
            message_id=payload.get("header_message_id"),
            outbound_id=int(payload["outbound_id"]),
            source=payload.get("source", "report"),
            received_at=datetime.fromisoformat(payload["received_at"]),
        )


@dataclass(frozen=True, slots=True)
class Complaint:
    """What ``on_complaint`` receives: a recipient reported a send as unwanted."""

    recipient: str
    feedback_type: str
    """``abuse``, ``fraud``, ``virus``, ``other``... (RFC 5965)."""
    message_id: str | None
    """The Message-ID header of the send complained about."""
    outbound_id: int
    received_at: datetime

    def as_payload(self) -> dict[str, Any]:
        """The JSON form stored with the queue entry and the event."""
        return {
            "recipient": self.recipient,
            "feedback_type": self.feedback_type,
            "header_message_id": self.message_id,
            "outbound_id": self.outbound_id,
            "received_at": self.received_at.isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Complaint:
        """The record back from :meth:`as_payload`."""
        return cls(
            recipient=payload["recipient"],
            feedback_type=payload.get("feedback_type") or "abuse",
            message_id=payload.get("header_message_id"),
            outbound_id=int(payload["outbound_id"]),
            received_at=datetime.fromisoformat(payload["received_at"]),
        )


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What ``on_unsubscribe`` receives: a recipient asked for no more mail from this grant,
    by the one-click link (RFC 8058) or by mail to its ``List-Unsubscribe`` address.

    The address is suppressed in the grant's workspace by then, and its opt-in (if any)
    withdrawn; the handler is told, it need not act.
    """

    recipient: str
    via: str
    """``one_click`` (the HTTPS POST of the link) or ``mail`` (the mailto address)."""
    message_id: str | None
    """The Message-ID header of the last send to the recipient that carried the link."""
    workspace_id: str
    """The workspace whose suppression list now holds the address."""
    unsubscribed_at: datetime

    def as_payload(self) -> dict[str, Any]:
        """The JSON form stored with the queue entry."""
        return {
            "recipient": self.recipient,
            "via": self.via,
            "header_message_id": self.message_id,
            "workspace_id": self.workspace_id,
            "unsubscribed_at": self.unsubscribed_at.isoformat(),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Unsubscribe:
        """The record back from :meth:`as_payload`."""
        return cls(
            recipient=payload["recipient"],
            via=payload.get("via") or "one_click",
            message_id=payload.get("header_message_id"),
            workspace_id=payload.get("workspace_id") or "",
            unsubscribed_at=datetime.fromisoformat(payload["unsubscribed_at"]),
        )


@dataclass(frozen=True, slots=True)
class Suppression:
    """An address the fleet will not mail, and why."""

    id: int
    """The entry's position in the list (``after=`` pages by it)."""
    address: str
    reason: SuppressionReason
    detail: str | None
    """What caused it: the bounce's reason and words, the operator's note..."""
    workspace: str | None
    """The workspace it applies to; None for the whole application."""
    event_id: int | None
    """The event that caused it (a ``message.bounced`` / ``message.complained``)."""
    created_at: datetime
