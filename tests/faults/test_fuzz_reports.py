"""Hostile delivery reports: property-based tests of DSN, ARF and bounce reading.

:func:`~mailfleet.mail.read_report` reads every message that reaches a bounce
address (and every automatic-looking one a grant receives). It is fed the real
samples (``tests/bounce_samples.py``, ``tests/corpus/bounces``) cut, spliced
and sprinkled with random bytes, ``multipart/report`` messages built with
hostile delivery-status and feedback-report fields (bad status codes, bad
actions, addresses of every shape, huge diagnostics), and structured-but-
mangled MIME (``hostile_mail.py``). Whatever the input, the report must:
come from the readers and not from ``read_report``'s last-resort ``except``,
take bounded time, be the same twice, use only the documented values (kind,
reason, class, action, an ``N.N.N`` status, a 4xx/5xx reply code), keep
recipients only where its kind allows them, and hold only strings the store
can keep (its JSON form is stored in a PostgreSQL JSONB column, which
refuses NUL and lone surrogates).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from hostile_mail import hostile_message, mutated
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import bounce_samples as s
from mailfleet.mail import (
    BounceClass,
    BounceReason,
    Report,
    ReportKind,
    classify_failure,
    read_report,
)
from mailfleet.mail.arf import read_arf
from mailfleet.mail.dsn import read_delivery_status, recipient_of, status_of
from mailfleet.mail.mimeparts import read_part, walk

settings.register_profile(
    "fuzz-reports",
    max_examples=60,
    deadline=5000,  # ms: a hang or a quadratic blow-up fails, a slow CI does not
    database=None,  # no example database in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("fuzz-reports")
"""This module's profile (applied to its tests only; ``--hypothesis-profile=fuzz-reports``
makes it every test's)."""
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bounces"
SAMPLES = [
    s.crlf(text)
    for name, text in vars(s).items()
    if name.isupper() and isinstance(text, str) and name != "ORIGINAL"
] + [path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))]
SECONDS = 3.0
STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}", re.ASCII)
ACTIONS = {"failed", "delayed", "delivered", "relayed", "expanded"}


def storable(value: Any) -> None:
    """Every string in ``value`` (a JSON document) is one the store can hold."""
    if isinstance(value, str):
        value.encode("utf-8")
        assert "\x00" not in value, value
    elif isinstance(value, dict):
        for key, item in value.items():
            storable(key)
            storable(item)
    elif isinstance(value, list | tuple):
        for item in value:
            storable(item)


def check_report(raw: bytes, envelope: tuple[str, ...] = ()) -> Report:
    started = time.monotonic()
    report = read_report(raw, envelope_recipients=envelope)
    assert time.monotonic() - started < SECONDS
    assert not any("could not be read" in d for d in report.defects), report.defects
    assert isinstance(report.kind, ReportKind)
    document = report.as_json()
    json.dumps(document)
    storable(document)
    storable([report.reporting_mta, *report.defects])
    if report.kind not in (ReportKind.BOUNCE, ReportKind.COMPLAINT):
        assert report.recipients == ()
    if report.kind not in (ReportKind.BOUNCE, ReportKind.MESSAGE):
        assert report.delayed == ()
    assert (report.feedback_type is not None) == (report.kind is ReportKind.COMPLAINT)
    for recipient in (*report.recipients, *report.delayed):
        assert isinstance(recipient.reason, BounceReason)
        assert isinstance(recipient.bounce_class, BounceClass)
        assert recipient.action in ACTIONS
        assert recipient.address
        assert recipient.address == recipient.address.lower()
        assert recipient.status is None or STATUS.fullmatch(recipient.status), recipient.status
        assert recipient.reply_code is None or 400 <= recipient.reply_code < 600
        assert recipient.diagnostic is None or len(recipient.diagnostic) <= 1000
        storable([recipient.remote_mta])
        if report.kind is ReportKind.COMPLAINT:
            assert recipient.reason is BounceReason.COMPLAINT
    for recipient in report.delayed:
        assert recipient.action == "delayed"
    assert read_report(raw, envelope_recipients=envelope) == report  # deterministic
    return report


@FUZZ
@given(st.binary(max_size=5000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check_report(raw)


@FUZZ
@given(mutated(SAMPLES))
def test_real_reports_cut_spliced_and_sprinkled(raw: bytes) -> None:
    check_report(raw)


@FUZZ
@given(hostile_message())
def test_structured_but_mangled_mime(raw: bytes) -> None:
    check_report(raw)


# -- multipart/report with hostile fields -------------------------------------------------

STATUSES = [
    "5.1.1",
    "4.2.2",
    "2.0.0",
    "5.1",
    "5.1.1.1",
    "9.9.9",
    "5.1000.1",
    "05.01.01",
    "5.1.1 (bad)",
    "\u0665.\u0661.\u0661",  # Arabic-Indic digits: \d matches them
    "5.\uff11.1",  # a full-width digit
    "",
    "x",
    "5.1.1\x00",
    "550 5.7.1",
]
ACTION_VALUES = ["failed", "delayed", "delivered", "relayed", "expanded", "FAILED", "", "bogus"]
ADDRESSES = [
    "rfc822; user@example.com",
    "rfc822;<User@Example.COM>",
    "rfc822; bounces+T0K3N@fleet.example",
    "utf-8; us\u00e9r@ex\u00e4mple.com",
    "x-unknown; !!!",
    "rfc822;",
    "",
    "rfc822; a@b@c",
    "rfc822; \x00@example.com",
    "rfc822; " + "a" * 400 + "@example.com",
    'rfc822; "quoted local"@example.com',
    "rfc822; user@[192.0.2.1]",
    "rfc822; imceaex-_o=org@example.com",
]
DIAGNOSTICS = [
    "smtp; 550 5.1.1 <user@example.com>: Recipient address rejected",
    "smtp; 452-4.2.2 over quota\n 452 4.2.2 really",
    "smtp; 999 9.9.9 what",
    "x; " + "\u202e" * 50,
    "smtp; 550 " + "spam " * 5000,
    "smtp; 550 5.7.1 \x00\xff",
    "",
]


@st.composite
def dsn_report(draw: st.DrawFn) -> bytes:
    """A multipart/report with a text part, hostile delivery-status records, and an original."""
    records = []
    for _ in range(draw(st.integers(0, 5))):
        fields = [
            ("Final-Recipient", draw(st.sampled_from(ADDRESSES))),
            ("Original-Recipient", draw(st.sampled_from(ADDRESSES))),
            ("Action", draw(st.sampled_from(ACTION_VALUES))),
            ("Status", draw(st.sampled_from(STATUSES))),
            ("Diagnostic-Code", draw(st.sampled_from(DIAGNOSTICS))),
            ("Remote-MTA", draw(st.sampled_from(["dns; mx.example.com", "", "dns;", "\x00"]))),
        ]
        kept = draw(st.lists(st.sampled_from(fields), max_size=6, unique=True))
        separator = draw(st.sampled_from(["\n", "", "\n\n"]))
        records.append("".join(f"{name}: {value}\n" for name, value in kept) + separator)
    status_type = draw(
        st.sampled_from(["message/delivery-status", "message/global-delivery-status", "text/plain"])
    )
    human = draw(st.sampled_from([s.POSTFIX.split("\n\n")[1], "", "Delivery failed.\n"]))
    original = draw(st.sampled_from([s.original("user@example.com"), "", "garbage\n"]))
    raw = (
        "From: MAILER-DAEMON@mx.example.com\nTo: bounces+T0K3N@fleet.example\n"
        "Subject: Undelivered Mail Returned to Sender\nAuto-Submitted: auto-replied\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        f"--b\nContent-Type: text/plain\n\n{human}\n"
        f"--b\nContent-Type: {status_type}\n\n"
        "Reporting-MTA: dns; mx.example.com\n\n" + "".join(records) + "\n"
        f"--b\nContent-Type: message/rfc822\n\n{original}\n--b--\n"
    )
    return draw(st.sampled_from([s.crlf, s.lf]))(raw)


@FUZZ
@given(dsn_report(), st.lists(st.sampled_from(["bounces+T0K3N@fleet.example", ""]), max_size=2))
@example(
    s.crlf(
        "From: MAILER-DAEMON@x.example\nSubject: failure notice\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: message/delivery-status\n\n"
        "Final-Recipient: rfc822; \x00@example.com\nAction: failed\nStatus: 5.1.1\n"
        "Diagnostic-Code: smtp; 550 5.7.1 \x00\n--b--\n"
    ),
    [],
)
def test_hostile_delivery_status_fields(raw: bytes, envelope: list[str]) -> None:
    report = check_report(raw, tuple(envelope))
    for recipient in report.recipients:
        assert not recipient.address.startswith("bounces+")  # never the sender's own VERP


@st.composite
def arf_report(draw: st.DrawFn) -> bytes:
    """An ARF report (RFC 5965) with hostile feedback fields."""
    feedback = draw(st.sampled_from(["abuse", "fraud", "", "\x00", "x" * 500, "abuse; junk"]))
    fields = [
        f"Feedback-Type: {feedback}",
        f"User-Agent: {draw(st.sampled_from(['Yahoo!-Mail-Feedback/2.0', '', chr(0)]))}",
        "Version: 1",
        f"Original-Mail-From: {draw(st.sampled_from(['<bounces+T0K3N@fleet.example>', '<>']))}",
    ]
    fields += [f"Original-Rcpt-To: {a}" for a in draw(st.lists(st.sampled_from(ADDRESSES)))]
    kept = draw(st.permutations(fields))
    report_type = draw(st.sampled_from(["message/feedback-report", "text/plain"]))
    encoding = draw(st.sampled_from(["", "Content-Transfer-Encoding: base64\n"]))
    body = "\n".join(kept) + "\n"
    if encoding:
        import base64

        body = base64.b64encode(body.encode("utf-8", "surrogatepass")).decode()
    raw = (
        "From: staff@hotmail.com\nTo: abuse@fleet.example\nSubject: complaint\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="a"\n\n'
        "--a\nContent-Type: text/plain\n\nThis is an email abuse report\n"
        f"--a\nContent-Type: {report_type}\n{encoding}\n{body}\n"
        f"--a\nContent-Type: message/rfc822\n\n{s.original('user@example.com')}\n--a--\n"
    )
    return s.crlf(raw)


@FUZZ
@given(arf_report())
def test_hostile_feedback_reports(raw: bytes) -> None:
    report = check_report(raw)
    if report.kind is ReportKind.COMPLAINT:
        assert report.feedback_type


@FUZZ
@given(
    st.one_of(st.none(), st.sampled_from(STATUSES), st.text(max_size=12)),
    st.one_of(st.none(), st.integers(-1000, 10_000)),
    st.text(max_size=3000),
)
def test_classify_failure_gives_documented_values(
    status: str | None, reply: int | None, text: str
) -> None:
    reason, klass = classify_failure(status, reply, text)
    assert isinstance(reason, BounceReason)
    assert isinstance(klass, BounceClass)
    assert classify_failure(status, reply, text) == (reason, klass)


@FUZZ
@given(st.text(max_size=3000))
def test_delivery_status_fields_of_any_text(text: str) -> None:
    _message, records = read_delivery_status(text)
    assert all(records)
    for record in records:
        address = recipient_of(record)
        assert address is None or address == address.lower()
        status = status_of(record)
        assert status is None or STATUS.fullmatch(status)


@FUZZ
@given(st.one_of(st.binary(max_size=3000), mutated(SAMPLES), hostile_message()))
def test_the_light_mime_walk_of_anything(raw: bytes) -> None:
    defects: list[str] = []
    parts = walk(read_part(raw, whole=True), defects)
    assert len(parts) <= 64
    complaint = read_arf(parts, defects)
    if complaint is not None:
        assert all(r.reason is BounceReason.COMPLAINT for r in complaint.recipients)


def test_huge_reports_read_in_bounded_time() -> None:
    head = "From: MAILER-DAEMON@x.example\nSubject: failure notice\n"
    cases = [
        s.crlf(head + "\n" + "a@b.example " * 300_000),
        s.crlf(head + "Subject: " + "=?utf-8?q?a?= " * 100_000 + "\n\nx\n"),
        s.crlf(
            head + 'Content-Type: multipart/report; boundary="b"\n\n'
            "--b\nContent-Type: message/delivery-status\n\n"
            + "Final-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n\n" * 20_000
            + "--b--\n"
        ),
        s.crlf(head + "\n" + "Diagnostic-Code: smtp; 550 " + "x" * 3_000_000 + "\n"),
        s.crlf(s.POSTFIX).replace(b"\r\n", b"\r\n" + b" " * 1000),
        # a run of parameter-name characters with no "=": scanned again from each of them
        s.crlf(head + "Content-Type: multipart/report; " + "x" * 200_000 + "\n\nx\n"),
        s.crlf(head + "Reply-To: " + "(" * 5000 + "\nTo: " + "(" * 5000 + "\n\nx\n"),
    ]
    for raw in cases:
        check_report(raw)
