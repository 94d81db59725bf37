"""Hostile MIME: property-based tests of the parsers every inbound message goes through.

``parse_message`` (the full parse an agent sees), ``parse_headers`` (the fast
read on arrival), ``thread_keys`` / ``reply_references``, ``automatic_reason``
and :class:`~mailfleet.InboundMessage` are fed arbitrary bytes, structured
messages mangled on purpose (``hostile_mail.py``) and real messages cut and
spliced. Whatever the input they must: not raise (the parsers promise to
record problems as defects, and their last-resort ``except`` must never be
what caught it), finish in bounded time, give the same result twice, and give
only strings the store can hold (valid UTF-8, no NUL: PostgreSQL text and
JSONB reject both).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from hostile_mail import entity, hostile_message, line_ends, mutated
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailfleet import InboundMessage
from mailfleet.mail import ParsedMessage, parse_headers, parse_message, thread_keys
from mailfleet.mail.inbound import automatic_reason
from mailfleet.mail.parse import MAX_DEFECTS
from mailfleet.mail.spamfacts import header_facts
from mailfleet.model.messages import MessageHeaders, StoredMessage
from test_mail_parse import ALTERNATIVE, ATTACHMENTS, FORWARD, assert_sane, nested

settings.register_profile(
    "fuzz-mime",
    max_examples=40,
    deadline=5000,  # ms per example: a hang or a quadratic blow-up fails, a slow CI does not
    database=None,  # no example database in the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("fuzz-mime")
"""This module's profile (applied to its tests only; ``--hypothesis-profile=fuzz-mime``
makes it every test's)."""
SAMPLES = [ALTERNATIVE, ATTACHMENTS, FORWARD, nested(4)]
SECONDS = 5.0
"""The most one parse of a generated input may take (a quadratic blow-up takes minutes)."""
HUGE_SECONDS = 15.0
"""The most one parse of a few megabytes may take, on a loaded CI machine."""


def storable(value: str) -> None:
    """A string the store can hold: encodable as UTF-8, no NUL."""
    value.encode("utf-8")
    assert "\x00" not in value, value


def check_headers(headers: MessageHeaders) -> None:
    """The arrival read: storable strings, unfolded values, usable thread keys."""
    for value in (headers.sender, headers.subject, headers.message_id, *headers.recipients):
        if value is not None:
            storable(value)
    for name, value in headers.headers:
        storable(name)
        storable(value)
        assert not {"\r", "\n"} & set(value)
    keys = thread_keys(headers)
    assert headers.message_id not in keys.references
    assert keys.subject != ""
    assert all(ref.startswith("<") and ref.endswith(">") for ref in keys.references)
    reason = automatic_reason(headers.headers)
    assert reason is None or isinstance(reason, str)
    facts = header_facts(headers.headers)  # the spam facts the MX reads from them
    assert facts == header_facts(headers.headers)


def check_parse(raw: bytes, seconds: float = SECONDS) -> ParsedMessage:
    """Everything that must hold of one input, whatever it is."""
    started = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - started < seconds
    assert_sane(parsed)  # storable strings, sizes, no "parser failure"
    assert parsed.size == len(raw)
    assert len(parsed.defects) <= MAX_DEFECTS
    assert len(set(parsed.defects)) == len(parsed.defects)
    for body in (parsed.text, parsed.html):
        assert body is None or (isinstance(body, str) and "\r\n" not in body)
    again = parse_message(raw)
    assert again == parsed  # deterministic (attachments compare without their loaders)
    assert [a.content() for a in again.attachments] == [a.content() for a in parsed.attachments]
    headers = parse_headers(raw)
    check_headers(headers)
    assert parse_headers(raw) == headers
    stored = StoredMessage(
        id="m1",
        grant_id="g1",
        raw=raw,
        sender=headers.sender,
        recipients=headers.recipients,
        subject=headers.subject,
        message_id=headers.message_id,
        received_at=datetime.now(UTC),
        headers=headers.headers,
    )
    inbound = InboundMessage.from_stored(stored)
    assert not inbound.was_parsed
    assert (inbound.text, inbound.html, inbound.defects) == (
        parsed.text,
        parsed.html,
        parsed.defects,
    )
    assert inbound.was_parsed
    assert inbound.automatic == automatic_reason(headers.headers)
    return parsed


@FUZZ
@given(st.binary(max_size=5000))
@example(b"Subject: a\x00b\r\nFrom: x\x00@example.org\r\n\r\n")  # NUL reached the store
@example(b"From: " + b"(" * 400 + b")" * 400 + b"\r\n\r\n")  # RecursionError escaped
@example(b"Reply-To: " + b"(" * 400 + b"a@example.org\r\n\r\n")  # ... from the spam facts
@example(b"Subject: =?utf-16?b?2AA=?= =?unicode_escape?q?=5Cud800?=\r\n\r\n")  # surrogates
def test_arbitrary_bytes(raw: bytes) -> None:
    check_parse(raw)


@FUZZ
@given(hostile_message())
def test_structured_but_mangled_messages(raw: bytes) -> None:
    check_parse(raw)


@FUZZ
@given(mutated(SAMPLES))
def test_real_messages_cut_and_spliced(raw: bytes) -> None:
    check_parse(raw)


@st.composite
def wrapped_text(draw: st.DrawFn) -> tuple[bytes, str]:
    """A well-formed message whose first part is a known text, around a hostile tree."""
    text = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\x00"), max_size=300))
    encoding = draw(st.sampled_from(["base64", "quoted-printable", "8bit"]))
    if encoding == "base64":
        import base64

        body = base64.encodebytes(text.encode("utf-8"))
    elif encoding == "quoted-printable":
        import quopri

        body = quopri.encodestring(text.encode("utf-8"))
    else:
        body = text.encode("utf-8")
    rest = draw(entity())
    raw = (
        b"From: a@example.org\nTo: b@example.com\nSubject: known\n"
        b"Date: Mon, 3 Jun 2024 10:00:00 +0000\nMessage-ID: <known@example.org>\n"
        b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="=_outer_="\n\n'
        b"--=_outer_=\nContent-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\n\n" + body + b"\n"
        b"--=_outer_=\n" + rest + b"\n--=_outer_=--\n"
    )
    return draw(line_ends(raw)), text


@FUZZ
@given(wrapped_text())
def test_a_readable_body_is_found_whatever_follows_it(case: tuple[bytes, str]) -> None:
    raw, text = case
    parsed = check_parse(raw)
    assert parsed.subject == "known"
    assert parsed.message_id == "<known@example.org>"
    assert parsed.text is not None
    # line ends are the transport's: compare the lines
    assert parsed.text.replace("\r", "\n").split() == text.replace("\r", "\n").split()


def test_huge_inputs_parse_in_bounded_time() -> None:
    head = b"From: a@example.org\r\nSubject: big\r\n"
    cases = [
        head + b"\r\n" + b"x" * 3_000_000,  # one 3 MB line
        head + b"X-Long: " + b"y" * 2_000_000 + b"\r\n\r\nhi\r\n",  # one 2 MB header
        head + b"To: " + b"<a@b>, " * 200_000 + b"\r\n\r\nhi\r\n",  # 1.4 MB of addresses
        head + b"Subject: " + b"=?utf-8?q?a?= " * 100_000 + b"\r\n\r\nhi\r\n",
        head
        + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"--b\r\n\r\nx\r\n" * 20_000,  # many parts
        head + b"Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"=" * 1_000_000,
        b"\x00" * 2_000_000,
        b"\n" * 1_000_000,
        b"a:" * 1_000_000,
        # each of its encoded words was searched for in a list of all the defects before it
        head + b"Subject: " + b"=?x?q?a?= " * 1_500 + b"\r\n\r\nhi\r\n",
        head + b"From: " + b"(" * 50_000 + b"\r\n\r\n",
    ]
    for raw in cases:  # one parse each (no repeat): within the time, and sane
        started = time.monotonic()
        parsed, headers = parse_message(raw), parse_headers(raw)
        assert time.monotonic() - started < HUGE_SECONDS, raw[:60]
        assert_sane(parsed)
        check_headers(headers)


def _at_depth(frames: int, raw: bytes) -> ParsedMessage:
    """``parse_message(raw)`` called with ``frames`` more frames on the stack."""
    if frames:
        return _at_depth(frames - 1, raw)
    return parse_message(raw)


def test_the_result_does_not_depend_on_the_callers_stack() -> None:
    """Nested comments made the stdlib's header parser recurse: near the limit, it failed
    or not depending on how deep the caller was (a handler, a worker thread), and the
    defect's text held the RecursionError's message, which varies too."""
    for depth in (30, 150, 600):
        raw = (
            b"From: a@example.org\r\nTo: " + b"(" * depth + b"b@example.org\r\n"
            b"Content-Type: text/plain; name=" + b"(" * depth + b"\r\n\r\nhi\r\n"
        )
        shallow = parse_message(raw)
        assert _at_depth(700, raw) == shallow
        assert not any("RecursionError" in d for d in shallow.defects), shallow.defects
        check_parse(raw)
