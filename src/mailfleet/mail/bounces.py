"""Reading any message as a delivery report: :func:`read_report` never raises.

The message is read in this order, stopping at the first form it has:

1. an ARF feedback report (:mod:`.arf`): a complaint;
2. RFC 3464 / RFC 6533 delivery-status fields (:mod:`.dsn`), in their own
   part or in a text part that carries them: per recipient, ``failed`` makes
   a bounce, ``delayed`` a delay warning (kind ``message``, ``delayed``
   filled), ``delivered``/``relayed``/``expanded`` only a success;
3. an Amazon SES JSON notification (:mod:`.ses`);
4. a provider's non-ARF feedback loop (:mod:`.arf`);
5. a success notice, or an auto-reply or vacation notice (RFC 3834 headers,
   vendor headers, the subject) unless a mail system sent it;
6. a failure or delay in an MTA's own text (:mod:`.mtatext`), when the
   sender, subject and text agree it is one (:mod:`.signals`);
7. else an ordinary message.

A report a gateway wrapped whole in a ``message/rfc822`` part is read from
inside it; a read receipt is a success unless it says the message was refused
(a Sieve reject). The recipients themselves are read in :mod:`.failures`.

Ordinary mail leaves at the first step that finds no cue: no report header,
no report subject, no mail-system sender and no report structure in the raw
bytes. Only the report's own text is read for phrases, never the quoted
original, so a bounce of a vacation notice is still a bounce.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .arf import Complaint, read_arf, read_loop_complaint
from .dsn import looks_like_delivery_status
from .failures import Context, Failures, from_dsn, from_mdn, from_text
from .mimeparts import Part, part_text, read_part, split_head, transfer_decoded, walk
from .mtatext import find_failed, split_original
from .original import Original, attached_original, find_message_id, message_id_of, quoted_original
from .reasons import find_reply_code, find_status
from .reportaddr import addresses_in, find_verp_token, is_verp
from .reports import FailedRecipient, Report, ReportKind
from .ses import read_ses
from .signals import (
    DELAY_PHRASES,
    FAILURE_PHRASES,
    PERMANENT_PHRASES,
    SUCCESS_PHRASES,
    VACATION_PHRASES,
    Cues,
    header_cues,
    hinted,
)

__all__ = ["read_report"]

MAX_INPUT = 4_000_000
"""Bytes read of a report; a longer one is cut (its report parts come first)."""
MAX_TEXT = 100_000
PHRASE_WINDOW = 8_000
"""Characters of the report's own text its phrases are looked for in (they open it)."""
MAX_DEFECTS = 20
_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_EXCLUDED_FIELDS = ("to", "delivered-to", "envelope-to", "x-envelope-to", "from", "sender")
_VERP_FIELDS = ("to", "delivered-to", "x-original-to", "envelope-to", "x-envelope-to")
_EMBEDDED = ("message/rfc822", "message/global")


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
    lower: str = ""
    """The start of ``own``, lower-cased: where the phrases are looked for."""
    quoted: str | None = None
    dsn_texts: list[str] = field(default_factory=list)
    original: Original | None = None
    excluded: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)

    @property
    def subject(self) -> str:
        """The subject's kind, without the ``prefixed_`` of a reply or forward."""
        return (self.cues.subject_kind or "").removeprefix("prefixed_")

    def context(self) -> Context:
        return Context(
            self.own,
            self.lower,
            self.excluded,
            self.ids,
            self.cues.failed_header,
            self.subject,
            self.original,
            self.defects,
        )


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
        return _read(raw, tuple(str(a) for a in envelope_recipients), defects, nested=False)
    except Exception as error:  # the promise: any input gives a report
        defects.append(f"the report could not be read: {type(error).__name__}")
        return Report(kind=ReportKind.MESSAGE, defects=_defects(defects))


def _defects(defects: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(defects))[:MAX_DEFECTS]


def _read(raw: bytes, envelope: tuple[str, ...], defects: list[str], *, nested: bool) -> Report:
    if len(raw) > MAX_INPUT:
        defects.append(f"the report is longer than {MAX_INPUT} bytes: the rest is not read")
        raw = raw[:MAX_INPUT]
    top = read_part(raw, whole=True)
    cues = header_cues(top.headers, top.ctype, top.params)
    if not cues.any and not hinted(raw):
        return Report(kind=ReportKind.MESSAGE, defects=_defects(defects))
    reading = _Reading(top, cues, walk(top, defects), envelope, defects)
    _read_texts(reading)
    complaint = read_arf(reading.parts, defects)
    if complaint is None and cues.report_type == "feedback-report":
        defects.append("a feedback report without its message/feedback-report part")
    if complaint is not None:
        return _complaint(reading, complaint)
    systemish = cues.daemon or reading.subject in ("failure", "delay", "report")
    wrapped = None if nested or reading.dsn_texts or not systemish else _wrapped(reading)
    if wrapped is not None:
        return _read(wrapped, envelope, defects, nested=True)
    reading.original = attached_original(reading.parts, defects) or quoted_original(reading.quoted)
    _exclusions(reading)
    failures = _structured(reading)
    if failures is not None:
        return _report(reading, failures)
    if cues.subject_kind == "complaint" or not systemish:
        complaint = read_loop_complaint(reading.parts, cues, reading.own, reading.quoted, defects)
        if complaint is not None:
            return _complaint(reading, complaint)
    return _report(reading, _from_cues(reading, systemish))


def _structured(reading: _Reading) -> Failures | None:
    """What the report's machine-readable parts say: DSN fields, a read receipt, SES JSON."""
    if reading.dsn_texts:
        failures = from_dsn(reading.context(), reading.dsn_texts)
        if failures is not None:
            return failures
    elif reading.cues.report_type == "delivery-status":
        reading.defects.append("a delivery-status report without its delivery-status part")
    receipt = next(
        (p for p in reading.parts if p.ctype == "message/disposition-notification"), None
    )
    if receipt is not None:
        return from_mdn(reading.context(), part_text(receipt, reading.defects))
    ses = read_ses(reading.own) if reading.own.lstrip().startswith("{") else None
    if ses is None:
        return None
    return Failures(
        ses.kind,
        ses.recipients,
        ses.delayed,
        ses.reporting_mta,
        ses.message_id,
        ses.mail_texts,
        ses.feedback_type,
    )


def _from_cues(reading: _Reading, systemish: bool) -> Failures:
    """What the headers and the report's own words say, when no structure does."""
    cues, own, lower = reading.cues, reading.own, reading.lower
    if cues.subject_kind == "success" and (
        cues.daemon or cues.auto_generated or cues.auto_replied or SUCCESS_PHRASES.search(lower)
    ):
        return Failures(ReportKind.DELIVERED)
    auto = (
        cues.auto_replied
        or cues.subject_kind == "auto"
        or (cues.subject_kind == "auto_weak" and (cues.auto_generated or cues.bulk))
    )
    if (
        not auto
        and not cues.daemon
        and (cues.empty_return_path or cues.auto_generated or cues.bulk)
    ):
        auto = VACATION_PHRASES.search(lower[:1500]) is not None
    if auto and not (systemish or cues.failed_header):
        return Failures(ReportKind.AUTO_REPLY)
    failure = FAILURE_PHRASES.search(lower) is not None
    delay = DELAY_PHRASES.search(lower) is not None
    if cues.daemon and SUCCESS_PHRASES.search(lower) and not (failure or delay):
        return Failures(ReportKind.DELIVERED)
    window = own[:PHRASE_WINDOW]
    shown = find_reply_code(window) is not None or find_status(window) is not None
    named = bool(find_failed(own, reading.excluded, reading.ids))
    shown = shown or named
    said = failure or delay or shown
    prefixed = (cues.subject_kind or "").startswith("prefixed_")
    if prefixed:
        head = lower[:800]
        subject_says = bool(FAILURE_PHRASES.search(head) or DELAY_PHRASES.search(head))
    else:
        subject_says = reading.subject in ("failure", "delay")
    unattended = cues.empty_return_path or cues.auto_generated or cues.auto_replied
    headers = reading.top.headers
    attached = any(part.ctype in _EMBEDDED for part in reading.parts)
    mass_mail = cues.bulk or headers.get("list-id") is not None
    if not (cues.daemon or unattended) and (
        (prefixed and headers.get("in-reply-to") is not None)
        or (mass_mail and not (attached or named))
    ):
        # A person's reply that talks about a failure is not one; nor is mass mail
        # that names no failed address and carries no original (a bounce relayed
        # through a list does).
        subject_says = False
    if (
        cues.failed_header
        or cues.report_type == "delivery-status"
        or (cues.daemon and (reading.subject in ("failure", "delay", "report") or said))
        or (subject_says and said)
        or (unattended and failure and shown)
    ):
        delayed = reading.subject == "delay" or (delay and PERMANENT_PHRASES.search(lower) is None)
        return from_text(reading.context(), delayed)
    return Failures(ReportKind.MESSAGE)


def _wrapped(reading: _Reading) -> bytes | None:
    """A whole report a gateway wrapped in a message/rfc822 part, if that is what this is."""
    for part in reading.parts:
        if part.ctype in _EMBEDDED:
            body = transfer_decoded(part, reading.defects).lstrip(b"\r\n")
            ctype = (split_head(body)[0].get("content-type") or "").lower()
            if ctype.startswith("multipart/report"):
                return body
    return None


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
    reading.lower = reading.own[:PHRASE_WINDOW].lower()


def _exclusions(reading: _Reading) -> None:
    """Addresses that are never a failed recipient, and the message IDs in play."""
    headers = reading.top.headers
    excluded = set(addresses_in(reading.envelope))
    excluded.update(addresses_in(v for n in _EXCLUDED_FIELDS for v in headers.get_all(n)))
    excluded.update(addresses_in(headers.get_all("return-path")))
    if reading.original is not None:  # a sender who wrote to itself may be the one that failed
        recipients = set(reading.original.addresses("to", "cc"))
        excluded.update(a for a in reading.original.senders if a not in recipients)
    ids = {message_id_of(v) for n in ("message-id", "in-reply-to") for v in headers.get_all(n)}
    ids.update(message_id_of(v) for v in " ".join(headers.get_all("references")).split())
    if reading.original is not None:
        ids.add(reading.original.message_id)
    reading.ids = {i.lower() for i in ids if i}
    reading.excluded = excluded


def _complaint(reading: _Reading, complaint: Complaint) -> Report:
    reading.original = complaint.original
    _exclusions(reading)
    failures = Failures(
        ReportKind.COMPLAINT,
        [r for r in complaint.recipients if not is_verp(r.address)],
        reporting_mta=complaint.reporting_mta,
        verp_texts=[complaint.mail_from or ""],
        feedback_type=complaint.feedback_type,
    )
    return _report(reading, failures)


def _unique(recipients: list[FailedRecipient]) -> tuple[FailedRecipient, ...]:
    seen: dict[str, FailedRecipient] = {}
    for recipient in recipients:
        seen.setdefault(recipient.address, recipient)
    return tuple(seen.values())


def _report(reading: _Reading, failures: Failures) -> Report:
    """The :class:`Report`, with the original's Message-ID and the VERP token found."""
    kind = failures.kind
    complaint = kind is ReportKind.COMPLAINT
    original = reading.original
    headers = reading.top.headers
    own_id = message_id_of(headers.get("message-id"))
    candidates = [
        original.message_id if original else None,
        failures.message_id,
        find_message_id(reading.quoted),
        find_message_id(reading.own),
    ]
    if kind is not ReportKind.MESSAGE:
        # An auto-reply (or a receipt) names the message it answers in In-Reply-To.
        in_reply_to = message_id_of(headers.get("in-reply-to"))
        candidates.insert(0 if kind is ReportKind.AUTO_REPLY else len(candidates), in_reply_to)
    original_id = next((c for c in candidates if c and c != own_id), None)
    own_recipients = [v for name in _VERP_FIELDS for v in headers.get_all(name)]
    from_original: list[str | None] = []
    if original is not None:
        from_original = [original.headers.get("return-path")]
        if complaint:
            from_original.extend(failures.verp_texts)
        from_original.append(original.headers.text())
    token = find_verp_token(
        [
            *reading.envelope,
            *own_recipients,
            *from_original,
            *failures.verp_texts,
            (reading.quoted or "")[:20_000],
            reading.own[:20_000],
        ]
    )
    recipients, delayed = failures.recipients, failures.delayed
    if kind in (ReportKind.DELIVERED, ReportKind.AUTO_REPLY, ReportKind.MESSAGE):
        recipients = []
    if kind not in (ReportKind.MESSAGE, ReportKind.BOUNCE):
        delayed = []
    return Report(
        kind=kind,
        recipients=_unique(recipients),
        delayed=_unique(delayed),
        reporting_mta=failures.reporting_mta,
        original_message_id=original_id,
        verp_token=token,
        feedback_type=(failures.feedback_type or "abuse") if complaint else None,
        defects=_defects(reading.defects),
    )
