"""What ``send`` and ``reply`` answer: expected states are values, not exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .deliverability import Suppression

__all__ = ["OutgoingMail", "SendCategory", "SendResult", "SendStatus"]


class SendCategory(StrEnum):
    """What kind of mail a send is, which decides what it carries and whom it may reach."""

    TRANSACTIONAL = "transactional"
    """The default: replies, receipts, notifications one recipient caused. No
    unsubscribe headers, no opt-in."""
    BULK = "bulk"
    """Mail sent to many recipients alike (newsletters, announcements): one recipient a
    send, each carrying its own ``List-Unsubscribe`` (mailto and https) and
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058)."""
    CAMPAIGN = "campaign"
    """Marketing mail: as ``bulk``, and only to recipients who confirmed by double
    opt-in (else ``opt_in_pending``, and a confirmation is sent)."""


class SendStatus(StrEnum):
    """The outcome of asking to send one message."""

    QUEUED = "queued"
    """Accepted into the outbox; delivery follows."""
    PAUSED = "paused"
    """The grant is paused (HTTP 400 ``grant_paused``)."""
    RESTRICTED = "restricted"
    """The grant is restricted for abuse (HTTP 403 ``grant_restricted``)."""
    RATE_LIMITED = "rate_limited"
    """The daily quota, the queue of scheduled sends or a warm-up ramp is full (HTTP 429):
    ``retry_after`` says in how many seconds a send may be admitted again. Nothing was
    queued (unless the send asked to be deferred: then it is ``queued`` with ``send_at``)."""
    SUPPRESSED = "suppressed"
    """A recipient is on the suppression list (it bounced, complained or
    unsubscribed; ``detail`` says which and why): nothing was queued."""
    INVALID_RECIPIENT = "invalid_recipient"
    """A recipient address is not valid (``detail`` says why): nothing was queued."""
    DOMAIN_NOT_AUTHENTICATED = "domain_not_authenticated"
    """The sending domain's DNS is not verified (SPF, DKIM, DMARC, MX): outside dev mode
    it cannot send until a check passes; ``failing_checks`` names what is wrong."""
    BLOCKED_BY_RULE = "blocked_by_rule"
    """An outbound rule of the workspace or application blocks it (HTTP 403; ``detail``
    names the rule): nothing was queued."""
    OPT_IN_PENDING = "opt_in_pending"
    """A ``campaign`` send to a recipient who has not confirmed by double opt-in: nothing
    was queued. ``detail`` says whether a confirmation was just sent, is awaiting its
    answer, or expired unanswered (``Fleet.request_opt_in`` asks again)."""
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

    send_at: float | None = None
    """``queued``: when the message is due to leave (epoch seconds), later than now when
    it was paced, scheduled past the burst or deferred (``detail`` says which); None: now."""

    id: str | None = None
    """``queued``: mailfleet's id of the stored message (its ``sent`` copy, which
    ``fleet.message(grant, id)`` and ``GET /v1/grants/{grant}/messages/{id}`` read)."""
    suppressed: tuple[Suppression, ...] = ()
    """``suppressed``: each listed recipient with its reason."""

    @property
    def ok(self) -> bool:
        """Whether the message was accepted."""
        return self.status is SendStatus.QUEUED


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """What an outbound rule sees of a send: who sends, to whom, and the subject."""

    grant_id: str
    workspace_id: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
