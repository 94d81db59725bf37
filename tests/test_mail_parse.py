"""Parsing inbound MIME: real-world shapes, malformed input, and never raising (pure, no I/O)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfleet.mail import (
    Mailbox,
    ParsedMessage,
    has_reply_prefix,
    normalize_subject,
    parse_headers,
    parse_message,
    thread_keys,
)
from mailfleet.mail.parse import MAX_DEFECTS, MAX_DEPTH, MAX_PARTS
from mailfleet.mail.threads import MAX_ID_LENGTH, reply_references
from mailfleet.model.messages import MessageHeaders


def crlf(text: str) -> bytes:
    """A test message written with ``\\n`` as it travels: CRLF line ends, UTF-8."""
    return text.replace("\n", "\r\n").encode("utf-8")


def assert_sane(parsed: ParsedMessage) -> None:
    """What holds for every parse, whatever the input."""
    strings = [
        parsed.subject,
        parsed.text,
        parsed.html,
        parsed.message_id,
        parsed.in_reply_to,
        *parsed.references,
        *parsed.defects,
        *(part for pair in parsed.headers for part in pair),
    ]
    for box in (parsed.from_, *parsed.to, *parsed.cc, *parsed.reply_to):
        if box is not None:
            strings += [box.name, box.address, str(box)]
    for attachment in parsed.attachments:
        strings += [attachment.filename, attachment.content_id, attachment.content_type]
        assert len(attachment.content()) == attachment.size
    for value in strings:
        if value is not None:
            value.encode("utf-8")  # valid Unicode: no lone surrogates
            assert "\x00" not in value
    assert parsed.date is None or parsed.date.tzinfo is not None
    assert not any(d.startswith("parser failure") for d in parsed.defects), parsed.defects
    reply_references(parsed)


def has_defect(parsed: ParsedMessage, fragment: str) -> bool:
    return any(fragment in defect for defect in parsed.defects)


# -- real-world shapes ------------------------------------------------------------------

ALTERNATIVE = crlf(
    """\
Return-Path: <ana@example.org>
From: =?UTF-8?Q?Ana_Mar=C3=ADa_L=C3=B3pez?= <Ana.Lopez@Example.org>
To: "Support Team" <support@example.com>, bob@example.com,
 undisclosed-recipients:;
Cc: =?ISO-8859-1?B?Suly9G1l?= <jerome@example.net>
Reply-To: replies@example.org
Subject: =?UTF-8?B?UmU6IENhZsOpIG1lZXRpbmcg4piV?= =?UTF-8?Q?_tomorrow?=
Date: Tue, 14 May 2024 09:30:00 +0200
Message-ID: <CAF=abc123@mail.example.org>
In-Reply-To: <parent-1@example.com>
References: <root@example.com>
 <parent-1@example.com>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="000000000000abcdef"

--000000000000abcdef
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

Hola! Caf=C3=A9 at 10?=20
A long line that was soft=
 broken.

--000000000000abcdef
Content-Type: text/html; charset="UTF-8"
Content-Transfer-Encoding: base64

PGRpdj5Ib2xhISBDYWbDqSBhdCAxMD88L2Rpdj4K
--000000000000abcdef--
"""
)


def test_multipart_alternative_from_a_webmail() -> None:
    parsed = parse_message(ALTERNATIVE)
    assert parsed.from_ == Mailbox("Ana María López", "Ana.Lopez@Example.org")
    assert parsed.from_.normalized() == "ana.lopez@example.org"
    assert parsed.to == (
        Mailbox("Support Team", "support@example.com"),
        Mailbox(None, "bob@example.com"),
    )
    assert parsed.cc == (Mailbox("Jérôme", "jerome@example.net"),)
    assert parsed.reply_to == (Mailbox(None, "replies@example.org"),)
    assert parsed.subject == "Re: Café meeting ☕ tomorrow"
    assert parsed.date == datetime(2024, 5, 14, 9, 30, tzinfo=timezone(timedelta(hours=2)))
    assert parsed.message_id == "<CAF=abc123@mail.example.org>"
    assert parsed.in_reply_to == "<parent-1@example.com>"
    assert parsed.references == ("<root@example.com>", "<parent-1@example.com>")
    assert parsed.text == "Hola! Café at 10? \nA long line that was soft broken.\n"
    assert parsed.html == "<div>Hola! Café at 10?</div>\n"
    assert parsed.attachments == ()
    assert parsed.defects == ()
    assert parsed.size == len(ALTERNATIVE)
    assert parsed.headers[0] == ("Return-Path", "<ana@example.org>")
    assert [name for name, _ in parsed.headers][1:4] == ["From", "To", "Cc"]
    assert_sane(parsed)


def test_threading_keys_of_a_reply() -> None:
    keys = thread_keys(parse_headers(ALTERNATIVE))
    assert keys.references == ("<parent-1@example.com>", "<root@example.com>")
    assert keys.subject == "café meeting ☕ tomorrow"
    assert keys.is_reply


LOGO = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR fake image bytes \xff\xfe"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40
ATTACHMENTS = (
    crlf(
        """\
From: Zoë <zoe@example.org>
To: agent@example.com
Subject: Invoices
Date: Wed, 15 May 2024 17:02:11 +0000
Message-ID: <invoice-42@example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="mixed"

This is a multi-part message in MIME format.
--mixed
Content-Type: multipart/related; boundary="related"; type="multipart/alternative"

--related
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Voil=E0 the invoices.

--alt
Content-Type: text/html; charset=utf-8

<p>Voilà the invoices. <img src="cid:logo.123@example.org"></p>
--alt--

--related
Content-Type: image/png; name="logo.png"
Content-Transfer-Encoding: base64
Content-ID: <logo.123@example.org>
Content-Disposition: inline; filename="logo.png"

"""
    )
    + base64.encodebytes(LOGO).replace(b"\n", b"\r\n")
    + crlf(
        """
--related--

--mixed
Content-Type: application/pdf
Content-Transfer-Encoding: base64
Content-Disposition: attachment;
 filename*0*=UTF-8''Rechnung%20f%C3%BCr%20;
 filename*1*=M%C3%A4rz.pdf

"""
    )
    + base64.encodebytes(PDF).replace(b"\n", b"\r\n")
    + crlf(
        """
--mixed
Content-Type: text/plain; name="=?UTF-8?B?bm90ZXPigJMxLnR4dA==?="
Content-Disposition: attachment; filename="=?UTF-8?B?bm90ZXPigJMxLnR4dA==?="

plain text file
--mixed
Content-Type: application/octet-stream; name==?iso-8859-1?q?d=E9j=E0_vu=2Ebin?=
Content-Transfer-Encoding: base64

AAEC
--mixed
Content-Type: text/plain; charset=utf-8
Content-Disposition: inline

-- 
List footer
--mixed--
"""
    )
)


def test_attachments_inline_images_and_rfc2231_filenames() -> None:
    parsed = parse_message(ATTACHMENTS)
    assert parsed.text == "Voilà the invoices.\n"
    assert parsed.html is not None
    assert "cid:logo.123@example.org" in parsed.html
    logo, pdf, notes, binary, footer = parsed.attachments

    assert (logo.filename, logo.content_type, logo.inline) == ("logo.png", "image/png", True)
    assert logo.content_id == "<logo.123@example.org>"
    assert logo.content() == LOGO
    assert logo.size == len(LOGO)

    assert pdf.filename == "Rechnung für März.pdf"
    assert (pdf.content_type, pdf.inline, pdf.content_id) == ("application/pdf", False, None)
    assert pdf.content() == PDF

    assert notes.filename == "notes\u20131.txt"  # an encoded word in a quoted filename
    assert notes.content() == b"plain text file"

    assert binary.filename == "déjà vu.bin"  # a bare encoded word, as some clients send
    assert binary.content() == b"\x00\x01\x02"

    assert (footer.filename, footer.content_type, footer.inline) == (None, "text/plain", True)
    assert footer.content() == b"-- \r\nList footer"
    assert_sane(parsed)


def test_attachment_content_is_decoded_on_demand() -> None:
    parsed = parse_message(ATTACHMENTS)
    pdf = parsed.attachments[1]
    assert pdf.content() == pdf.content() == PDF
    assert "_source" not in repr(pdf)  # the loader is not part of the value


FORWARD = crlf(
    """\
From: carol@example.net
To: agent@example.com
Subject: Fwd: the original
Date: Thu, 16 May 2024 08:00:00 -0000
Message-ID: <fwd-1@example.net>
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: text/plain

See below.
--outer
Content-Type: message/rfc822
Content-Disposition: attachment; filename="original.eml"

From: dave@example.org
Subject: the original
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

Inner text, not the body.
--inner
Content-Type: text/html; charset=x-no-such-charset

<p>inner</p>
--inner--

--outer--
"""
)


def test_forwarded_message_is_one_attachment() -> None:
    parsed = parse_message(FORWARD)
    assert parsed.text == "See below."  # the line break before a boundary belongs to it
    assert parsed.html is None
    assert parsed.date == datetime(2024, 5, 16, 8, 0, tzinfo=UTC)  # -0000: zone unknown, UTC
    (original,) = parsed.attachments
    assert (original.content_type, original.filename) == ("message/rfc822", "original.eml")
    inner = parse_message(original.content())
    assert inner.subject == "the original"
    assert inner.text == "Inner text, not the body."
    assert original.size == len(original.content())
    assert_sane(parsed)


def test_base64_encoded_forwarded_message_is_decoded() -> None:
    inner = crlf("From: eve@example.org\nSubject: inside\n\nhello inside\n")
    raw = (
        crlf(
            "From: a@example.com\nDate: Thu, 16 May 2024 08:00:00 +0000\nMessage-ID: <x@y>\n"
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nbody\n"
            "--b\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        )
        + base64.encodebytes(inner)
        + b"--b--\r\n"
    )
    parsed = parse_message(raw)
    (attached,) = parsed.attachments
    assert parse_message(attached.content()).subject == "inside"
    assert has_defect(parsed, "part 2: message/rfc822 part with base64 encoding")
    assert_sane(parsed)


def test_text_only_latin1_message() -> None:
    raw = (
        b"From: jean@example.fr\r\nTo: agent@example.com\r\n"
        b"Subject: =?iso-8859-1?q?r=E9sum=E9?=\r\n"
        b"Date: Fri, 17 May 2024 12:00:00 +0100\r\nMessage-ID: <a@b.fr>\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n"
        b"\r\nCh\xe8re amie,\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.subject == "résumé"
    assert parsed.text == "Chère amie,\n"
    assert parsed.defects == ()
    assert_sane(parsed)


def test_raw_utf8_headers_are_read_as_utf8() -> None:
    raw = crlf(
        "From: Jürgen <j@example.de>\nSubject: Grüße\nDate: Fri, 17 May 2024 12:00:00 +0000\n"
        "Message-ID: <g@example.de>\nContent-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: 8bit\n\nGrüße\n"
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Grüße"
    assert parsed.from_ == Mailbox("Jürgen", "j@example.de")
    assert parsed.text == "Grüße\n"
    assert parsed.defects == ()  # RFC 6532 allows UTF-8 in headers


def test_text_attachment_is_not_the_body() -> None:
    raw = crlf(
        "From: a@example.com\nDate: Fri, 17 May 2024 12:00:00 +0000\nMessage-ID: <t@x>\n"
        "Content-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain; name=log.txt\n\nlog line\n"
        "--b\nContent-Type: text/plain\n\nthe body\n--b--\n"
    )
    parsed = parse_message(raw)
    assert parsed.text == "the body"
    assert [a.filename for a in parsed.attachments] == ["log.txt"]


def test_html_only_message() -> None:
    raw = crlf("From: a@example.com\nContent-Type: text/html; charset=utf-8\n\n<b>hi</b>\n")
    parsed = parse_message(raw)
    assert (parsed.text, parsed.html) == (None, "<b>hi</b>\n")


# -- malformed input --------------------------------------------------------------------

HEAD = "From: a@example.com\nDate: Fri, 17 May 2024 12:00:00 +0000\nMessage-ID: <m@example.com>\n"

MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty input", b"", "message is empty"),
    ("only whitespace", b"\r\n\r\n", "From: header missing"),
    ("no Date", crlf("From: a@example.com\nMessage-ID: <m@x>\n\nhi\n"), "Date: header missing"),
    ("no Message-ID", crlf("From: a@example.com\nDate: x\n\nhi\n"), "Message-ID: header missing"),
    ("lone body", b"Hello there, no headers at all\r\nline 2\r\n", "MissingHeaderBodySeparator"),
    (
        "missing close boundary",
        crlf(
            HEAD
            + "Content-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\nhi\n"
        ),
        "CloseBoundaryNotFoundDefect",
    ),
    (
        "missing start boundary",
        crlf(HEAD + "Content-Type: multipart/mixed; boundary=q\n\nno parts here\n"),
        "StartBoundaryNotFoundDefect",
    ),
    (
        "multipart without boundary",
        crlf(HEAD + "Content-Type: multipart/mixed\n\nsome text\n"),
        "NoBoundaryInMultipartDefect",
    ),
    (
        "bad base64",
        crlf(HEAD + "Content-Transfer-Encoding: base64\n\naGVsbG8gd29y!!bGQ\n"),
        "InvalidBase64",
    ),
    (
        "bad quoted-printable",
        crlf(HEAD + "Content-Transfer-Encoding: quoted-printable\n\ncaf=E9 =ZZ =\n"),
        "invalid quoted-printable escape",
    ),
    (
        "unknown charset",
        crlf(HEAD + "Content-Type: text/plain; charset=x-klingon\n\ncafé\n"),
        "unknown charset 'x-klingon' (read as UTF-8)",
    ),
    (
        "wrong charset",
        HEAD.encode() + b"Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xe9\r\n",
        "text is not valid 'utf-8' (bad bytes replaced)",
    ),
    (
        "8-bit body declared 7bit",
        HEAD.encode() + b"Content-Type: text/plain; charset=latin-1\r\n\r\ncaf\xe9\r\n",
        "8-bit bytes in a part declared 7bit",
    ),
    (
        "unknown transfer encoding",
        crlf(HEAD + "Content-Transfer-Encoding: x-rot13\n\nuryyb\n"),
        "unknown Content-Transfer-Encoding 'x-rot13'",
    ),
    (
        "8-bit garbage in a header",
        HEAD.encode() + b"Subject: caf\xe9 \xff\xfe\r\n\r\nhi\r\n",
        "Subject: 8-bit bytes that are not UTF-8 (read as Latin-1)",
    ),
    (
        "unknown charset in an encoded word",
        crlf(HEAD + "Subject: =?x-unknown?Q?caf=E9?=\n\nhi\n"),
        "Subject: CharsetError",
    ),
    ("unreadable date", crlf("From: a@example.com\nDate: yesterday-ish\n\nhi\n"), "Date: Invalid"),
    (
        "invalid From",
        crlf("From: not an address\nDate: Fri, 17 May 2024 12:00:00 +0000\n\nhi\n"),
        "From: invalid address",
    ),
    (
        "repeated Subject",
        crlf(HEAD + "Subject: one\nSubject: two\n\nhi\n"),
        "Subject: header repeated",
    ),
    (
        "unparsable header",
        crlf(HEAD + 'To: "\n\nhi\n'),
        "To: unparsable header (IndexError",
    ),
    (
        "Content-Type that breaks policy.default",
        crlf(HEAD + "Content-Type: Z%>6];7*\n\nhi\n"),
        "Content-Type: unparsable header",
    ),
    (
        "absurdly nested comment",
        crlf(HEAD.replace("From: a@example.com", "From: " + "(" * 5000)),
        "From: comments nested more than 20 deep: decoded leniently",
    ),
    (
        "header continuation first",
        b" folded first line\r\nFrom: a@example.com\r\n\r\nhi\r\n",
        "FirstHeaderLineIsContinuationDefect",
    ),
    (
        "message-id without brackets",
        crlf("From: a@example.com\nMessage-ID: no-brackets\n\nhi\n"),
        "Message-ID: InvalidHeaderDefect",
    ),
]


@pytest.mark.parametrize(
    ("raw", "expected"), [(r, e) for _, r, e in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_input_is_parsed_and_the_defect_recorded(raw: bytes, expected: str) -> None:
    parsed = parse_message(raw)
    assert has_defect(parsed, expected), parsed.defects
    assert_sane(parsed)


def test_fallback_decodings_keep_the_content() -> None:
    latin = parse_message(HEAD.encode() + b"Subject: caf\xe9\r\n\r\nhi\r\n")
    assert latin.subject == "café"
    unknown = parse_message(crlf(HEAD + "Content-Type: text/plain; charset=x-klingon\n\ncafé\n"))
    assert unknown.text == "café\n"
    garbage = parse_message(
        HEAD.encode() + b"Content-Type: text/plain; charset=bogus\r\n\r\n\xe9\r\n"
    )
    assert garbage.text == "é\n"
    assert has_defect(garbage, "unknown charset 'bogus' (read as Latin-1)")
    lone = parse_message(b"Hello there, no headers at all\r\n")
    assert lone.text == "Hello there, no headers at all\n"
    nobound = parse_message(crlf(HEAD + "Content-Type: multipart/mixed\n\nsome text\n"))
    assert nobound.text == "some text\n"
    bad64 = parse_message(crlf(HEAD + "Content-Transfer-Encoding: base64\n\naGVsbG8gd29y!!bGQ\n"))
    assert bad64.text == "hello world"
    no_brackets = parse_message(crlf("From: a@example.com\nMessage-ID: no-brackets\n\nhi\n"))
    assert no_brackets.message_id == "<no-brackets>"


def nested(depth: int) -> bytes:
    opening = "".join(
        f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n" for i in range(depth)
    )
    closing = "".join(f"--b{i}--\n" for i in reversed(range(depth + 1)))
    body = f"--b{depth}\nContent-Type: text/plain\n\ndeep\n"
    return crlf(HEAD + "Content-Type: multipart/mixed; boundary=b0\n\n" + opening + body + closing)


def test_deep_nesting_is_capped() -> None:
    parsed = parse_message(nested(MAX_DEPTH + 10))
    assert has_defect(parsed, f"nested more than {MAX_DEPTH} levels")
    assert parsed.text is None
    assert_sane(parsed)


def test_nesting_that_defeats_the_stdlib_parser_keeps_the_headers() -> None:
    parsed = parse_message(nested(3000))
    assert has_defect(parsed, "MIME structure unreadable, body kept as text: RecursionError")
    assert parsed.from_ == Mailbox(None, "a@example.com")
    assert parsed.text is not None
    assert "deep" in parsed.text
    assert_sane(parsed)


def test_too_many_parts_are_capped() -> None:
    parts = "".join(
        f"--b\nContent-Type: application/octet-stream\n\n{i}\n" for i in range(MAX_PARTS + 5)
    )
    parsed = parse_message(
        crlf(HEAD + "Content-Type: multipart/mixed; boundary=b\n\n" + parts + "--b--\n")
    )
    assert has_defect(parsed, f"more than {MAX_PARTS} MIME parts")
    assert len(parsed.attachments) == MAX_PARTS - 1
    assert_sane(parsed)


def test_defects_of_nested_parts_are_located() -> None:
    parsed = parse_message(FORWARD)
    assert has_defect(parsed, "part 2.1.2: unknown charset") is False  # inner bodies not decoded
    raw = crlf(
        HEAD + "Content-Type: multipart/mixed; boundary=o\n\n--o\n"
        "Content-Type: multipart/alternative; boundary=i\n\n--i\n"
        "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n@@@\n--i--\n--o--\n"
    )
    assert has_defect(parse_message(raw), "part 1.1: InvalidBase64")


def test_nul_bytes_and_control_characters_do_not_break_parsing() -> None:
    raw = HEAD.encode() + b"Subject: a\x00b\x07c\r\nX-Bin: \x00\x01\x02\r\n\r\nbody\x00\r\n"
    parsed = parse_message(raw)
    assert parsed.subject == "a\ufffdb\x07c"
    assert has_defect(parsed, "Subject: NonPrintableDefect")
    assert has_defect(parsed, "NUL characters in text")
    assert_sane(parsed)


def test_bare_line_feeds_and_bare_carriage_returns() -> None:
    lf = parse_message(HEAD.encode() + b"Subject: lf\n\nbody\n")
    assert (lf.subject, lf.text) == ("lf", "body\n")
    cr = parse_message(b"From: a@example.com\rSubject: cr\r\rbody\r")
    assert cr.subject == "cr"
    assert_sane(cr)


def test_mbox_from_line_is_ignored() -> None:
    parsed = parse_message(b"From sender@example.com Fri May 17 12:00:00 2024\r\n" + ALTERNATIVE)
    assert parsed.message_id == "<CAF=abc123@mail.example.org>"


# -- subjects ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "normal"),
    [
        ("Re: Hello", "hello"),
        ("RE: RE: re:Hello", "hello"),
        ("Fwd: FW: Fw: Hello", "hello"),
        ("AW: WG: SV: VS: Antw: Hello", "hello"),
        ("Re[2]: Hello", "hello"),
        ("Re(3): Hello", "hello"),
        ("[list-name] Re: [list-name] Hello", "hello"),
        ("  Re :   Hello    World  ", "hello world"),
        ("Re\uff1a\u4f1a\u8bae", "\u4f1a\u8bae"),  # a full-width colon
        ("Hello: World", "hello: world"),
        ("Re: Hello [draft]", "hello [draft]"),
        ("Reply: not a prefix", "reply: not a prefix"),
        ("", ""),
        (None, ""),
        ("Re:", ""),
    ],
)
def test_normalize_subject(subject: str | None, normal: str) -> None:
    assert normalize_subject(subject) == normal


def test_normalize_subject_is_fast_on_long_prefix_chains() -> None:
    assert normalize_subject("Re: " * 50_000 + "x") == "x"


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("Re: x", True),
        ("AW: x", True),
        ("[team] Re: x", True),
        ("re[2]: x", True),
        ("Fwd: Re: x", False),
        ("x", False),
        (None, False),
        ("Regarding: x", False),
    ],
)
def test_has_reply_prefix(subject: str | None, reply: bool) -> None:
    assert has_reply_prefix(subject) is reply


# -- never raises -----------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SAMPLES = [ALTERNATIVE, ATTACHMENTS, FORWARD, nested(4)]


@FUZZ
@given(st.binary(max_size=4000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert_sane(parse_message(raw))
    assert_sane_headers(parse_headers(raw))


def assert_sane_headers(headers: MessageHeaders) -> None:
    """What holds for every header read on arrival, whatever the input."""
    for value in (headers.sender, headers.subject, headers.message_id, *headers.recipients):
        if value is not None:
            value.encode("utf-8")
    for name, value in headers.headers:
        (name + value).encode("utf-8")
        assert not {"\r", "\n"} & set(value)
    keys = thread_keys(headers)
    assert headers.message_id not in keys.references
    assert keys.subject != ""


@pytest.mark.parametrize("raw", SAMPLES)
def test_the_arrival_header_read_agrees_with_the_full_parser(raw: bytes) -> None:
    quick, full = parse_headers(raw), parse_message(raw)
    assert quick.sender == (full.from_.address if full.from_ else None)
    assert quick.recipients == tuple(box.address for box in (*full.to, *full.cc))
    assert (quick.subject, quick.message_id) == (full.subject, full.message_id)
    assert [name for name, _ in quick.headers] == [name for name, _ in full.headers]
    cited = [full.in_reply_to] if full.in_reply_to else []
    cited += reversed(full.references)
    expected = tuple(i for i in dict.fromkeys(cited) if i != full.message_id)
    assert thread_keys(quick).references == expected


def test_the_arrival_header_read_of_awkward_headers() -> None:
    raw = (
        b"From nobody Wed Nov 25 12:00:00 2026\n"  # an mbox separator
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\n  and more\r\n"
        b'To: "Doe, Jane" <jane@example.org>, k@example.org\r\n'
        b"Cc: undisclosed-recipients:;\r\n"
        b"From: Bad \xff\xfe <z@example.org>\r\n"
        b"Message-ID:   <id@example.org>  \r\n"
        b"not a field: the header block ends here\r\n"
        b"X-After: never read\r\n\r\nbody"
    )
    headers = parse_headers(raw)
    assert headers.subject == "café  and more"
    assert headers.recipients == ("jane@example.org", "k@example.org")
    assert headers.sender == "z@example.org"
    assert headers.message_id == "<id@example.org>"
    assert [name for name, _ in headers.headers] == ["Subject", "To", "Cc", "From", "Message-ID"]
    assert dict(headers.headers)["From"] == "Bad \ufffd\ufffd <z@example.org>"
    bare = parse_headers(b"Subject: no body, bare line feeds\nTo: a@example.org")
    assert (bare.subject, bare.recipients) == ("no body, bare line feeds", ("a@example.org",))
    assert parse_headers(b"") == MessageHeaders(None, (), None, None, ())


# Header-ish and MIME-ish tokens, so that random input reaches the deeper code paths.
TOKENS = st.sampled_from(
    [
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b": ",
        b"Content-Type: multipart/mixed; boundary=x",
        b"Content-Type: message/rfc822",
        b"Content-Type: text/plain; charset=",
        b"Content-Transfer-Encoding: base64",
        b"Content-Transfer-Encoding: quoted-printable",
        b"Content-Disposition: attachment; filename*=utf-8''",
        b"--x",
        b"--x--",
        b"=?utf-8?b?",
        b"=?x?q?",
        b"?=",
        b"From: ",
        b"To: ",
        b"Date: ",
        b"<",
        b">",
        b"@",
        b'"',
        b"(",
        b")",
        b"\xff",
        b"\xc3\xa9",
        b"=E9",
        b"aGVsbG8=",
    ]
)


@FUZZ
@given(st.lists(st.one_of(TOKENS, st.binary(max_size=8)), max_size=80))
def test_mime_shaped_garbage_never_raises(chunks: list[bytes]) -> None:
    assert_sane(parse_message(b"".join(chunks)))
    assert_sane_headers(parse_headers(b"".join(chunks)))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A sample message with a few random cuts, insertions and replacements."""
    raw = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        start = draw(st.integers(0, len(raw)))
        end = draw(st.integers(start, min(len(raw), start + 40)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "truncate"]))
        if action == "delete":
            del raw[start:end]
        elif action == "insert":
            raw[start:start] = draw(st.one_of(TOKENS, st.binary(max_size=12)))
        elif action == "replace":
            raw[start:end] = draw(st.binary(min_size=end - start, max_size=end - start))
        elif action == "duplicate":
            raw[start:start] = raw[start:end]
        else:
            del raw[start:]
    return bytes(raw)


@FUZZ
@given(mutated())
def test_mutated_messages_never_raise(raw: bytes) -> None:
    assert_sane(parse_message(raw))
    assert_sane_headers(parse_headers(raw))


def test_defects_are_listed_once_and_capped() -> None:
    invalid = ", ".join(f"nobody{i}" for i in range(MAX_DEFECTS * 2))
    parsed = parse_message(crlf(HEAD + f"To: {invalid}\nCc: x\nCc: x\n\nhi\n"))
    assert len(parsed.defects) == MAX_DEFECTS
    assert parsed.defects[-1].endswith("more defects")
    assert len(set(parsed.defects)) == len(parsed.defects)


def test_header_lookup_is_case_insensitive() -> None:
    parsed = parse_message(ALTERNATIVE)
    assert parsed.header("mime-version") == "1.0"
    assert parsed.header("X-Absent") is None


def test_thread_keys_order_and_subject_fallback() -> None:
    raw = crlf(
        "From: Bob <BOB@example.org>\nTo: agent@example.com\nSubject: AW: [ops] Disk full\n"
        "Message-ID: <self@x>\nIn-Reply-To: <c@x> <z@x>\n"
        "References: <a@x> <b@x>\n <c@x> <self@x>\nReferences: <late@x>\n\nhi\n"
    )
    keys = thread_keys(parse_headers(raw))
    # most recent first (In-Reply-To's first id only), no repeats, not its own id,
    # the first References field only
    assert keys.references == ("<c@x>", "<b@x>", "<a@x>")
    assert (keys.subject, keys.is_reply) == ("disk full", True)

    stripped = thread_keys(parse_headers(crlf("From: b@example.org\nSubject: RE: Disk full\n\n")))
    assert stripped == ((), "disk full", True)
    fresh = thread_keys(parse_headers(crlf("From: b@example.org\nSubject: Disk full\n\n")))
    assert fresh == ((), "disk full", False)
    assert thread_keys(parse_headers(b"")) == ((), None, False)


def test_thread_keys_cite_only_ids_a_header_can_repeat() -> None:
    long_id = "<" + "x" * MAX_ID_LENGTH + "@x>"
    raw = crlf(
        f"Subject: news\nIn-Reply-To: not an id\nReferences: <ok@x> {long_id} <caf\u00e9@x>\n\n"
    )
    keys = thread_keys(parse_headers(raw))
    assert keys == (("<ok@x>",), "news", True)  # a reply: it cites an id
