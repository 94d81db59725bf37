"""What ``Agent.send`` / ``reply`` reach: the outbound gates, building, the outbox.

The gates answer with values (:class:`~mailfleet.SendResult`): recipient
validation, then the grant's status, read in the transaction that queues the
message so that a pause or restriction takes effect at once. Quotas, suppression,
rules, the circuit breaker and DKIM signing join this path with the mail and
deliverability issues; the SMTP sender delivers what the outbox holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from sqlalchemy.engine import Connection

from ..agent import AgentContext
from ..model.addresses import parse_address
from ..model.errors import InvalidAddress
from ..model.messages import InboundMessage
from ..model.outbound import SendResult, SendStatus
from ..model.records import Grant, GrantStatus
from ..store import grants, messages
from ..store.database import Database

__all__ = ["Outbox"]


class Outbox(AgentContext):
    """Gates, builds and stores outbound mail for agents."""

    def __init__(self, database: Database, application_id: str) -> None:
        self._db = database
        self._app_id = application_id

    async def send(
        self,
        grant: Grant,
        to: Sequence[str],
        *,
        subject: str,
        text: str,
        html: str | None,
        in_reply_to: InboundMessage | None,
    ) -> SendResult:
        """Pass the gates, build the message and put it in the outbox."""
        if not to:
            return SendResult(SendStatus.REJECTED, detail="to: at least one recipient is needed")
        try:
            recipients = [str(parse_address(a, field="to")) for a in to]
        except InvalidAddress as exc:
            return SendResult(SendStatus.REJECTED, detail=str(exc))
        try:
            raw, message_id = _build(grant, recipients, subject, text, html, in_reply_to)
        except ValueError as exc:  # e.g. a line break in the subject
            return SendResult(SendStatus.REJECTED, detail=f"subject: {exc}")

        def store(conn: Connection) -> SendResult:
            # The status is read in the transaction: a pause takes effect at once.
            status = grants.get_grant(conn, self._app_id, grant.id).status
            if status is GrantStatus.PAUSED:
                return SendResult(SendStatus.PAUSED, detail="grant_paused")
            if status is GrantStatus.RESTRICTED:
                return SendResult(SendStatus.RESTRICTED, detail="grant_restricted")
            messages.store_outbound(conn, self._app_id, grant.id, raw, recipients=recipients)
            return SendResult(SendStatus.QUEUED, message_id=message_id)

        return await self._db.write(store)


def _build(
    grant: Grant,
    to: Sequence[str],
    subject: str,
    text: str,
    html: str | None,
    in_reply_to: InboundMessage | None,
) -> tuple[bytes, str]:
    message_id = make_msgid(domain=grant.domain)
    message = EmailMessage()
    message["From"] = grant.address
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id
    if in_reply_to is not None:
        message["Auto-Submitted"] = "auto-replied"
        if in_reply_to.message_id:
            message["In-Reply-To"] = in_reply_to.message_id
            references = dict(in_reply_to.headers).get("References", "")
            message["References"] = f"{references} {in_reply_to.message_id}".strip()
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n")), message_id
