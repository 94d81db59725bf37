"""Failed and delayed recipients: from DSN records, from a read receipt, from an MTA's text.

Each reader returns :class:`Failures`, what a bounce or delay warning says
about its recipients. The receiver's words are classified with
:func:`~.reasons.classify_failure`, on the first text that says something:
the Diagnostic-Code, else the recipient's own segment of the report's text,
else the whole report (see :func:`judge`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .dsn import DsnRecord, read_delivery_status, recipient_of, status_of, typed_value
from .mimeparts import split_head
from .mtatext import diagnostic_of, find_failed, remote_mta_of, reporting_mta_of, segments
from .original import Original, message_id_of
from .reasons import classify_first, find_reply_code, find_status, joined_reply
from .reportaddr import is_verp
from .reports import BounceClass, BounceReason, FailedRecipient, ReportKind
from .signals import FAILURE_PHRASES, PERMANENT_PHRASES

__all__ = ["Context", "Failures", "from_dsn", "from_mdn", "from_text", "judge"]

_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")
_LIST_HEADERS = ("list-id", "x-beenthere", "list-post", "x-mailman-version")


@dataclass(slots=True)
class Context:
    """What the readers need of the report as a whole."""

    own: str
    """The report's own text (before any quoted original)."""
    lower: str
    """The start of ``own``, lower-cased (where the phrases are looked for)."""
    excluded: set[str]
    """Addresses that are never a failed recipient (the sender's side, the reporter)."""
    ids: set[str]
    """Message IDs in play (lower case): never read as an address."""
    failed_header: list[str]
    subject_kind: str
    original: Original | None
    defects: list[str]


@dataclass(slots=True)
class Failures:
    """What a report says about its recipients."""

    kind: ReportKind
    recipients: list[FailedRecipient] = field(default_factory=list)
    delayed: list[FailedRecipient] = field(default_factory=list)
    reporting_mta: str | None = None
    message_id: str | None = None
    verp_texts: list[str] = field(default_factory=list)
    """Texts of the report where a VERP token may be (after the original's headers)."""
    feedback_type: str | None = None
    """For a complaint."""


def judge(
    status: str | None, reply: int | None, texts: list[str]
) -> tuple[BounceReason, BounceClass]:
    """Classify with the first text whose phrases say something (see ``classify_first``)."""
    return classify_first(status, reply, texts)


def _action(record: DsnRecord, status: str | None, failure_subject: bool) -> str:
    raw = (record.get("action") or "").strip().lower()
    for action in _ACTIONS:
        if raw.startswith(action[:5]):
            return action
    if status and status[0] == "2":
        return "delivered"
    if status and status[0] == "4" and not failure_subject:
        return "delayed"
    return "failed"


def from_dsn(context: Context, texts: list[str]) -> Failures | None:
    """The recipients of delivery-status ``texts`` (None when they name none)."""
    message: DsnRecord = {}
    records: list[DsnRecord] = []
    for text in texts:
        fields, found = read_delivery_status(text)
        records.extend(found)
        for name, value in fields.items():
            message.setdefault(name, value)
    if not records:
        context.defects.append("the delivery-status part has no recipient fields")
        return None
    hits = find_failed(context.own, context.excluded, context.ids)
    own_segments = segments(context.own, hits)
    spare = list(dict.fromkeys([*context.failed_header, *(hit[2] for hit in hits)]))
    failures = Failures(ReportKind.MESSAGE)
    succeeded = False
    for record in records:
        address = recipient_of(record)
        if address is None:
            taken = {r.address for r in failures.recipients + failures.delayed}
            address = next((a for a in spare if a not in taken), None)
            context.defects.append("a delivery-status record names no recipient")
        if address is None or address in context.excluded or is_verp(address):
            continue
        status = status_of(record)
        action = _action(record, status, context.subject_kind == "failure")
        if action not in ("failed", "delayed"):
            succeeded = True
            continue
        segment = own_segments.get(address, "")
        diagnostic = typed_value(joined_reply(record.get("diagnostic-code") or ""))
        diagnostic = diagnostic[:1000] if diagnostic else diagnostic_of(segment, address)
        reply = find_reply_code(diagnostic or "")
        reason, klass = judge(status, reply, [diagnostic or "", segment])
        recipient = FailedRecipient(
            address=address,
            status=status,
            reply_code=reply,
            reason=reason,
            bounce_class=klass,
            diagnostic=diagnostic,
            remote_mta=typed_value(record.get("remote-mta")),
            action=action,
        )
        (failures.recipients if action == "failed" else failures.delayed).append(recipient)
    if failures.recipients:
        failures.kind = ReportKind.BOUNCE
    elif not failures.delayed:
        if not succeeded:
            return None
        failures.kind = ReportKind.DELIVERED
    failures.reporting_mta = typed_value(message.get("reporting-mta"))
    failures.message_id = message_id_of(message.get("x-original-message-id"))
    failures.verp_texts = [message.get("x-postfix-sender") or ""]
    return failures


def from_mdn(context: Context, text: str) -> Failures:
    """A read receipt (RFC 8098): delivered, or a bounce when it says the message was refused.

    A Sieve ``reject`` (RFC 5429) answers with an MDN whose disposition is
    ``deleted`` and whose text says why.
    """
    fields, _ = split_head(text.lstrip("\r\n").encode("utf-8", "replace"))
    disposition = (fields.get("disposition") or "").lower()
    message_id = message_id_of(fields.get("original-message-id"))
    refused = any(word in disposition for word in ("deleted", "denied", "failed"))
    if not refused or not (
        context.subject_kind == "failure" or FAILURE_PHRASES.search(context.lower)
    ):
        return Failures(ReportKind.DELIVERED, message_id=message_id)
    address = recipient_of(
        {
            "final-recipient": fields.get("final-recipient") or "",
            "original-recipient": fields.get("original-recipient") or "",
        }
    )
    failures = Failures(ReportKind.BOUNCE, message_id=message_id)
    if address is not None and address not in context.excluded:
        diagnostic = diagnostic_of(context.own, address)
        reason, klass = judge(None, None, [context.own])
        failures.recipients.append(FailedRecipient(address, None, None, reason, klass, diagnostic))
    return failures


def _guessed(context: Context) -> list[str]:
    """The original's To, when a bounce's text names no address (not for list mail)."""
    original = context.original
    if original is None or any(name in original.headers for name in _LIST_HEADERS):
        return []
    guessed = [a for a in original.addresses("to") if a not in context.excluded and not is_verp(a)]
    if guessed:
        context.defects.append("no failed recipient in the text: taken from the original's To")
    return guessed


def from_text(context: Context, delay: bool) -> Failures:
    """The recipients of a bounce (or, with ``delay``, a delay warning) in an MTA's text."""
    own = context.own
    hits = find_failed(own, context.excluded, context.ids)
    own_segments = segments(own, hits)
    if context.failed_header:
        addresses = [a for a in context.failed_header if a not in context.excluded]
        addresses = [a for a in addresses if not is_verp(a)]
    else:
        addresses = list(dict.fromkeys(hit[2] for hit in hits))
    if not addresses:
        addresses = _guessed(context)
    if not addresses:
        context.defects.append("no failed recipient found")
    permanent = not delay and PERMANENT_PHRASES.search(context.lower) is not None
    fallback_status = find_status(own)
    fallback_reply = find_reply_code(own)
    found: list[FailedRecipient] = []
    for address in addresses:
        segment = own_segments.get(address, "")
        diagnostic = diagnostic_of(segment, address) if segment else None
        if diagnostic is None and len(addresses) == 1:
            diagnostic = diagnostic_of(own, answered=True)
        status = find_status(segment)
        reply = find_reply_code(diagnostic or "") or find_reply_code(segment)
        if status is None and reply is None:
            status, reply = fallback_status, fallback_reply
        reason, klass = judge(status, reply, [segment, own])
        if reason is BounceReason.UNKNOWN and status is None and reply is None and permanent:
            klass = BounceClass.HARD  # the report itself says the failure is permanent
        found.append(
            FailedRecipient(
                address=address,
                status=status,
                reply_code=reply,
                reason=reason,
                bounce_class=klass,
                diagnostic=diagnostic,
                remote_mta=remote_mta_of(segment),
                action="delayed" if delay else "failed",
            )
        )
    if delay:
        return Failures(ReportKind.MESSAGE, delayed=found, reporting_mta=reporting_mta_of(own))
    return Failures(ReportKind.BOUNCE, recipients=found, reporting_mta=reporting_mta_of(own))
