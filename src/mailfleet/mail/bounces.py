"""Reading any message as a delivery report: :func:`read_report` never raises.

The message is read in this order, stopping at the first form it has:

1. an ARF feedback report (:mod:`.arf`): a complaint;
2. RFC 3464 / RFC 6533 delivery-status fields (:mod:`.dsn`), in their own
   part or in a text part that carries them: per recipient, ``failed`` makes
   a bounce, ``delayed`` a delay warning (kind ``message``, ``delayed``
   filled), ``delivered``/``relayed``/``expanded`` only a success;
3. an Amazon SES JSON notification (:mod:`.ses`);
4. a provider's non-ARF feedback loop (:mod:`.arf`);
5. an auto-reply or vacation notice (RFC 3834 headers, vendor headers, the
   subject), unless a mail system sent it;
6. a failure or delay in an MTA's own text (:mod:`.mtatext`), when the
   sender, subject and text agree it is one (:mod:`.signals`);
7. a success notice or a read receipt; else an ordinary message.

Ordinary mail leaves at the first step that finds no cue: no report header,
no report subject, no mail-system sender and no report structure in the raw
bytes. Only the report's own text is read for phrases, never the quoted
original, so a bounce of a vacation notice is still a bounce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .arf import Complaint, read_arf, read_loop_complaint
from .dsn import (
    DsnRecord,
    looks_like_delivery_status,
    read_delivery_status,
    recipient_of,
    status_of,
    typed_value,
)
from .mimeparts import Part, part_text, read_part, walk
from .mtatext import (
    diagnostic_of,
    find_failed,
    remote_mta_of,
    reporting_mta_of,
    segments,
    split_original,
)
from .original import Original, attached_original, find_message_id, message_id_of, quoted_original
from .reasons import classify_failure, find_reply_code, find_status, text_reason
from .reportaddr import addresses_in, find_verp_token, is_verp, normalise
from .reports import BounceClass, BounceReason, FailedRecipient, Report, ReportKind
from .ses import read_ses
from .signals import BODY_HINT, DELAY_PHRASES, FAILURE_PHRASES, SUCCESS_PHRASES, Cues, header_cues

__all__ = ["read_report"]

MAX_INPUT = 4_000_000
"""Bytes read of a report; a longer one is cut (its report parts come first)."""
MAX_TEXT = 100_000
MAX_DEFECTS = 20
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_OWN_RECIPIENTS = ("to", "cc", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to")
_ACTIONS = ("failed", "delayed", "delivered", "relayed", "expanded")


@dataclass(slots=True)
class _Reading:
    """One report being read: its parts, cues and the texts found so far."""

    top: Part
    cues: Cues
    parts: list[Part]
    envelope: tuple[str, ...]
    defects: list[str]
    own: str = ""
    """The report's own text (its human-readable part, before any quoted original)."""
    quoted: str | None = None
    dsn_texts: list[str] = field(default_factory=list)
    original: Original | None = None
    excluded: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)


def read_report(raw: bytes, *, envelope_recipients: Sequence[str] = ()) -> Report:
    """Read any message as a delivery report; never raises.

    ``raw`` is the whole message as received; ``envelope_recipients`` are the
    RCPT TO addresses it came to (where a VERP token is looked for first).
    Returns a :class:`Report`: a bounce with its failed recipients, a
    complaint, an auto-reply, a delivery notice, or an ordinary message
    (delay warnings are ordinary messages with ``delayed`` recipients).
    Whatever was wrong with the input is listed in ``Report.defects``.
    """
    defects: list[str] = []
    try:
        if not isinstance(raw, bytes):
            raw = str(raw).encode("utf-8", "replace") if isinstance(raw, str) else bytes(raw)
        return _read(raw, tuple(str(a) for a in envelope_recipients), defects)
    except Exception as error:  # the promise: any input gives a report
        defects.append(f"the report could not be read: {type(error).__name__}")
        return Report(kind=ReportKind.MESSAGE, defects=_defects(defects))


def _defects(defects: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(defects))[:MAX_DEFECTS]


def _read(raw: bytes, envelope: tuple[str, ...], defects: list[str]) -> Report:
    if len(raw) > MAX_INPUT:
        defects.append(f"the report is longer than {MAX_INPUT} bytes: the rest is not read")
        raw = raw[:MAX_INPUT]
    top = read_part(raw)
    cues = header_cues(top.headers, top.ctype, top.params)
    if not cues.any and BODY_HINT.search(raw, 0, 300_000) is None:
        return Report(kind=ReportKind.MESSAGE, defects=_defects(defects))
    reading = _Reading(top, cues, walk(top, defects), envelope, defects)
    _read_texts(reading)
    complaint = read_arf(reading.parts, defects)
    if complaint is None and cues.report_type == "feedback-report":
        defects.append("a feedback report without its message/feedback-report part")
    if complaint is not None:
        return _complaint(reading, complaint)
    reading.original = attached_original(reading.parts, defects) or quoted_original(reading.quoted)
    _exclusions(reading)
    if reading.dsn_texts:
        report = _from_dsn(reading)
        if report is not None:
            return report
    elif cues.report_type == "delivery-status":
        defects.append("a delivery-status report without its delivery-status part")
    ses = read_ses(reading.own) if reading.own.lstrip().startswith("{") else None
    if ses is not None:
        failed = ses.kind is ReportKind.COMPLAINT or ses.kind is ReportKind.BOUNCE
        return _report(
            reading,
            ses.kind,
            ses.recipients if failed else [],
            ses.delayed,
            ses.reporting_mta,
            ses.mail_texts,
            ses.feedback_type,
            ses.message_id,
        )
    systemish = cues.daemon or cues.subject_kind in ("failure", "delay", "report")
    if cues.subject_kind == "complaint" or not systemish:
        complaint = read_loop_complaint(reading.parts, cues, reading.own, reading.quoted, defects)
        if complaint is not None:
            return _complaint(reading, complaint)
    if cues.subject_kind == "success" and (
        cues.daemon
        or cues.auto_generated
        or cues.auto_replied
        or SUCCESS_PHRASES.search(reading.own)
    ):
        return _report(reading, ReportKind.DELIVERED)
    auto = (
        cues.auto_replied
        or cues.subject_kind == "auto"
        or (cues.subject_kind == "auto_weak" and cues.auto_generated)
    )
    if auto and not (systemish or cues.failed_header):
        return _report(reading, ReportKind.AUTO_REPLY)
    failure = FAILURE_PHRASES.search(reading.own) is not None
    delay = DELAY_PHRASES.search(reading.own) is not None
    coded = find_reply_code(reading.own) is not None or find_status(reading.own) is not None
    if (
        cues.failed_header
        or cues.report_type == "delivery-status"
        or (
            cues.daemon
            and (cues.subject_kind in ("failure", "delay", "report") or failure or delay)
        )
        or (cues.subject_kind in ("failure", "delay") and (failure or delay or coded))
        or (
            (cues.empty_return_path or cues.auto_generated or cues.auto_replied)
            and failure
            and coded
        )
    ):
        return _from_text(reading, delay)
    if cues.report_type == "disposition-notification" or (
        cues.daemon and SUCCESS_PHRASES.search(reading.own)
    ):
        return _report(reading, ReportKind.DELIVERED)
    return Report(kind=ReportKind.MESSAGE, defects=_defects(defects))


def _read_texts(reading: _Reading) -> None:
    """The report's own text, its quoted original, and any delivery-status texts."""
    texts = [p for p in reading.parts if p.ctype == "text/plain"][:6] or [
        p for p in reading.parts if p.ctype == "text/html"
    ][:2]
    own: list[str] = []
    for part in reading.parts:
        if part.ctype in _STATUS_TYPES:
            reading.dsn_texts.append(part_text(part, reading.defects)[:MAX_TEXT])
    for part in texts:
        text = part_text(part, reading.defects)[:MAX_TEXT]
        mine, rest = split_original(text)
        if not reading.dsn_texts and looks_like_delivery_status(mine):
            reading.dsn_texts.append(mine)
            if part is not texts[0]:
                continue
        own.append(mine)
        if rest is not None:
            reading.quoted = rest
            break
    reading.own = "\n".join(own)


def _exclusions(reading: _Reading) -> None:
    """Addresses that are never a failed recipient, and the message IDs in play."""
    headers = reading.top.headers
    excluded = set(addresses_in(reading.envelope))
    excluded.update(addresses_in(v for n in _OWN_RECIPIENTS for v in headers.get_all(n)))
    excluded.update(
        addresses_in(v for n in ("from", "sender", "return-path") for v in headers.get_all(n))
    )
    ids = {message_id_of(v) for n in ("message-id", "in-reply-to") for v in headers.get_all(n)}
    ids.update(message_id_of(v) for v in " ".join(headers.get_all("references")).split())
    if reading.original is not None:
        ids.add(reading.original.message_id)
    reading.ids = {i.lower() for i in ids if i}
    reading.excluded = excluded


def _judge(
    status: str | None, reply: int | None, texts: list[str]
) -> tuple[BounceReason, BounceClass]:
    """Classify with the first text whose phrases say something (else the first text)."""
    for text in texts:
        if text and text_reason(text, status, reply) is not None:
            return classify_failure(status, reply, text)
    return classify_failure(status, reply, next((text for text in texts if text), ""))


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


def _from_dsn(reading: _Reading) -> Report | None:
    message: DsnRecord = {}
    records: list[DsnRecord] = []
    for text in reading.dsn_texts:
        fields, found = read_delivery_status(text)
        records.extend(found)
        for name, value in fields.items():
            message.setdefault(name, value)
    if not records:
        reading.defects.append("the delivery-status part has no recipient fields")
        return None
    hits = find_failed(reading.own, reading.excluded, reading.ids)
    own_segments = segments(reading.own, hits)
    spare = [a for a in dict.fromkeys([*reading.cues.failed_header, *(h[2] for h in hits)])]
    failure_subject = reading.cues.subject_kind == "failure"
    failed: list[FailedRecipient] = []
    delayed: list[FailedRecipient] = []
    succeeded = False
    for record in records:
        address = recipient_of(record)
        if address is None:
            taken = {r.address for r in failed + delayed}
            address = next((a for a in spare if a not in taken), None)
            reading.defects.append("a delivery-status record names no recipient")
        if address is None or address in reading.excluded or is_verp(address):
            continue
        status = status_of(record)
        action = _action(record, status, failure_subject)
        if action not in ("failed", "delayed"):
            succeeded = True
            continue
        segment = own_segments.get(address, "")
        diagnostic = typed_value(record.get("diagnostic-code"))
        diagnostic = diagnostic[:1000] if diagnostic else diagnostic_of(segment, address)
        reply = find_reply_code(diagnostic or "")
        reason, klass = _judge(status, reply, [diagnostic or "", segment])
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
        (failed if action == "failed" else delayed).append(recipient)
    if failed:
        kind = ReportKind.BOUNCE
    elif delayed:
        kind = ReportKind.MESSAGE
    elif succeeded:
        kind = ReportKind.DELIVERED
    else:
        return None
    extra = [message.get("x-postfix-sender") or ""]
    return _report(
        reading,
        kind,
        failed,
        delayed,
        typed_value(message.get("reporting-mta")),
        extra,
        message_id=message_id_of(message.get("x-original-message-id")),
    )


def _from_text(reading: _Reading, delay_phrase: bool) -> Report:
    cues, own = reading.cues, reading.own
    hits = find_failed(own, reading.excluded, reading.ids)
    own_segments = segments(own, hits)
    if cues.failed_header:
        addresses = [a for a in cues.failed_header if a not in reading.excluded and not is_verp(a)]
    else:
        addresses = list(dict.fromkeys(hit[2] for hit in hits))
    if not addresses and reading.original is not None:
        guessed = [a for a in reading.original.addresses("to") if a not in reading.excluded]
        if guessed:
            reading.defects.append("no failed recipient in the text: taken from the original's To")
            addresses = [a for a in guessed if not is_verp(a)]
    if not addresses:
        reading.defects.append("no failed recipient found")
    if cues.subject_kind in ("delay", "failure"):
        delay = cues.subject_kind == "delay"
    else:
        delay = delay_phrase
    fallback_status = find_status(own)
    fallback_reply = find_reply_code(own)
    found: list[FailedRecipient] = []
    for address in addresses:
        segment = own_segments.get(address, "")
        diagnostic = diagnostic_of(segment, address) if segment else None
        if diagnostic is None and len(addresses) == 1:
            diagnostic = diagnostic_of(own)
        status = find_status(segment)
        reply = find_reply_code(diagnostic or "") or find_reply_code(segment)
        if status is None and reply is None:
            status, reply = fallback_status, fallback_reply
        reason, klass = _judge(status, reply, [segment, own])
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
    kind = ReportKind.MESSAGE if delay else ReportKind.BOUNCE
    return _report(
        reading, kind, [] if delay else found, found if delay else [], reporting_mta_of(own)
    )


def _complaint(reading: _Reading, complaint: Complaint) -> Report:
    reading.original = complaint.original
    _exclusions(reading)
    recipients = [r for r in complaint.recipients if not is_verp(r.address)]
    extra = [complaint.mail_from or ""]
    return _report(
        reading,
        ReportKind.COMPLAINT,
        recipients,
        [],
        complaint.reporting_mta,
        extra,
        complaint.feedback_type,
        original_first=True,
    )


def _unique(recipients: list[FailedRecipient]) -> tuple[FailedRecipient, ...]:
    seen: dict[str, FailedRecipient] = {}
    for recipient in recipients:
        seen.setdefault(recipient.address, recipient)
    return tuple(seen.values())


def _report(
    reading: _Reading,
    kind: ReportKind,
    recipients: Sequence[FailedRecipient] = (),
    delayed: Sequence[FailedRecipient] = (),
    reporting_mta: str | None = None,
    extra: Sequence[str] = (),
    feedback_type: str | None = None,
    message_id: str | None = None,
    *,
    original_first: bool = False,
) -> Report:
    """The :class:`Report`, with the original's Message-ID and the VERP token found."""
    original = reading.original
    headers = reading.top.headers
    own_id = message_id_of(headers.get("message-id"))
    candidates = [
        original.message_id if original else None,
        message_id,
        find_message_id(reading.quoted),
        find_message_id(reading.own),
    ]
    original_id = next((c for c in candidates if c and c != own_id), None)
    own_recipients = [
        v for name in _OWN_RECIPIENTS[:1] + _OWN_RECIPIENTS[2:] for v in headers.get_all(name)
    ]
    from_original: list[str | None] = []
    if original is not None:
        from_original = [original.headers.get("return-path")]
        if original_first:
            from_original.extend(extra)
        from_original.append(original.headers.text())
    token = find_verp_token(
        [
            *reading.envelope,
            *own_recipients,
            *from_original,
            *extra,
            (reading.quoted or "")[:20_000],
            reading.own[:20_000],
        ]
    )
    if kind is ReportKind.DELIVERED or kind is ReportKind.AUTO_REPLY:
        recipients, delayed = (), ()
    return Report(
        kind=kind,
        recipients=_unique([r for r in recipients if normalise(r.address) or r.address]),
        delayed=_unique(list(delayed)),
        reporting_mta=reporting_mta,
        original_message_id=original_id,
        verp_token=token,
        feedback_type=(feedback_type or "abuse") if kind is ReportKind.COMPLAINT else None,
        defects=_defects(reading.defects),
    )
