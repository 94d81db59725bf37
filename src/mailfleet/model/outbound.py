"""What ``send`` and ``reply`` answer: expected states are values, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["SendResult", "SendStatus"]


class SendStatus(StrEnum):
    """The outcome of asking to send one message."""

    QUEUED = "queued"
    """Accepted into the outbox; delivery follows."""
    PAUSED = "paused"
    """The grant is paused (HTTP 400 ``grant_paused``)."""
    RESTRICTED = "restricted"
    """The grant is restricted for abuse (HTTP 403 ``grant_restricted``)."""
    RATE_LIMITED = "rate_limited"
    """Quota or rate reached (HTTP 429, see ``retry_after``)."""
    SUPPRESSED = "suppressed"
    """A recipient is on the suppression list (it bounced, complained or
    unsubscribed; ``detail`` says which and why): nothing was queued."""
    INVALID_RECIPIENT = "invalid_recipient"
    """A recipient address is not valid (``detail`` says why): nothing was queued."""
    DOMAIN_NOT_AUTHENTICATED = "domain_not_authenticated"
    """The sending domain's DNS is not verified (SPF, DKIM, DMARC, MX): outside dev mode
    it cannot send until a check passes; ``failing_checks`` names what is wrong."""
    REJECTED = "rejected"
    """The message itself is not acceptable (see ``detail``)."""


@dataclass(frozen=True, slots=True)
class SendResult:
    """The answer to ``Agent.send`` / ``Agent.reply``."""

    status: SendStatus
    message_id: str | None = None
    detail: str | None = None
    retry_after: float | None = None
    thread_id: str | None = None
    """The conversation the message joined (a reply: its parent's)."""
    failing_checks: tuple[str, ...] = ()
    """``domain_not_authenticated``: the failing checks of the domain (``spf``,
    ``dkim:<selector>``...); ``detail`` explains each."""

    @property
    def ok(self) -> bool:
        """Whether the message was accepted."""
        return self.status is SendStatus.QUEUED
