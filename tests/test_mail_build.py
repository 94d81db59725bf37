"""Building outbound messages: structure, round trips through the parser, threading, safety."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfleet.mail import (
    Mailbox,
    OutgoingAttachment,
    ParsedMessage,
    build_message,
    parse_headers,
    parse_message,
    thread_keys,
)
from mailfleet.mail.threads import MAX_REFERENCES
from mailfleet.model.errors import InvalidAddress, InvalidInput

SUBJECT = "Café ☕ déjà vu, a subject long enough to be folded over several lines"
WHEN = datetime(2024, 5, 20, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))
LOGO = b"\x89PNG\r\n\x1a\nnot really a png \x00\xff"


def build(**overrides: Any) -> bytes:
    """A minimal valid message, with ``overrides``; the raw bytes."""
    return build_message(**_arguments(overrides)).raw


def _arguments(overrides: dict[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "sender": "agent@example.com",
        "to": ["bob@example.org"],
        "subject": "Hello",
        "text": "Hi Bob.\n",
        "message_id_domain": "example.com",
        "date": WHEN,
    }
    arguments.update(overrides)
    return arguments


def tree(raw: bytes) -> list[str]:
    """The content types of a message, depth first, indented by nesting."""
    lines: list[str] = []

    def walk(part: Message, depth: int) -> None:
        lines.append("  " * depth + part.get_content_type())
        payload = part.get_payload()
        if isinstance(payload, list):
            for child in payload:
                if isinstance(child, Message):
                    walk(child, depth + 1)

    walk(message_from_bytes(raw, policy=compat32), 0)
    return lines


def assert_wire_safe(raw: bytes) -> None:
    """7-bit, CRLF line ends only, no line over 998 octets (RFC 5322)."""
    assert raw.isascii()
    assert b"\0" not in raw
    lines = raw.split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert max(len(line) for line in lines) <= 998


# -- structure and round trip -----------------------------------------------------------


def test_text_only() -> None:
    raw = build()
    assert tree(raw) == ["text/plain"]
    assert_wire_safe(raw)
    parsed = parse_message(raw)
    assert parsed.text == "Hi Bob.\n"
    assert parsed.html is None
    assert parsed.defects == ()


def test_text_and_html_are_alternatives() -> None:
    raw = build(html="<p>Hi Bob.</p>\n")
    assert tree(raw) == ["multipart/alternative", "  text/plain", "  text/html"]
    parsed = parse_message(raw)
    assert (parsed.text, parsed.html) == ("Hi Bob.\n", "<p>Hi Bob.</p>\n")


def test_attachments_make_a_mixed_message_and_inline_images_a_related_one() -> None:
    raw = build(
        html='<p><img src="cid:logo@example.com"></p>\n',
        attachments=[
            OutgoingAttachment("report.pdf", b"%PDF", "application/pdf"),
            OutgoingAttachment(
                "logo.png", LOGO, "image/png", inline=True, content_id="logo@example.com"
            ),
        ],
    )
    assert tree(raw) == [
        "multipart/mixed",
        "  multipart/alternative",
        "    text/plain",
        "    multipart/related",
        "      text/html",
        "      image/png",
        "  application/pdf",
    ]
    assert_wire_safe(raw)


def test_inline_attachment_without_html_goes_in_the_mixed_part() -> None:
    raw = build(attachments=[OutgoingAttachment("logo.png", LOGO, "image/png", inline=True)])
    assert tree(raw) == ["multipart/mixed", "  text/plain", "  image/png"]
    (logo,) = parse_message(raw).attachments
    assert logo.inline


def test_round_trip_gives_back_every_field() -> None:
    built = build_message(
        **_arguments(
            {
                "sender": "Agent Smith <Agent.Smith@Example.com>",
                "to": ["Bob Jones <bob@example.org>", '"Doe, Jane" <jane@example.org>'],
                "cc": ["Zoë Ünal <zoe@example.net>"],
                "reply_to": "replies@example.com",
                "subject": SUBJECT,
                "text": "Grüße aus Köln!\nA second line.\n",
                "html": "<p>Grüße aus Köln!</p>\n",
                "attachments": [
                    OutgoingAttachment(
                        "Rechnung für März.pdf", bytes(range(256)) * 10, "application/pdf"
                    ),
                    OutgoingAttachment(
                        "logo.png", LOGO, "image/png", inline=True, content_id="<logo@x>"
                    ),
                ],
                "headers": {"List-Unsubscribe": "<mailto:unsub@example.com>", "X-Note": "naïve"},
            }
        )
    )
    assert_wire_safe(built.raw)
    parsed = parse_message(built.raw)
    assert parsed.defects == ()
    assert parsed.from_ == Mailbox("Agent Smith", "agent.smith@example.com")
    assert parsed.to == (
        Mailbox("Bob Jones", "bob@example.org"),
        Mailbox("Doe, Jane", "jane@example.org"),
    )
    assert parsed.cc == (Mailbox("Zoë Ünal", "zoe@example.net"),)
    assert parsed.reply_to == (Mailbox(None, "replies@example.com"),)
    assert parsed.subject == SUBJECT
    assert parsed.date == WHEN
    assert parsed.message_id == built.message_id
    assert (parsed.in_reply_to, parsed.references) == (None, ())
    assert parsed.text == "Grüße aus Köln!\nA second line.\n"
    assert parsed.html == "<p>Grüße aus Köln!</p>\n"
    pdf, logo = sorted(parsed.attachments, key=lambda a: a.content_type)
    assert (pdf.filename, pdf.content(), pdf.inline) == (
        "Rechnung für März.pdf",
        bytes(range(256)) * 10,
        False,
    )
    assert (logo.filename, logo.content(), logo.inline, logo.content_id) == (
        "logo.png",
        LOGO,
        True,
        "<logo@x>",
    )
    headers = dict(parsed.headers)
    assert headers["List-Unsubscribe"] == "<mailto:unsub@example.com>"
    assert headers["X-Note"] == "naïve"
    assert "Auto-Submitted" not in headers
    assert built.recipients == ("bob@example.org", "jane@example.org", "zoe@example.net")


def test_message_id_is_on_the_given_domain_and_unique() -> None:
    first = build_message(**_arguments({"message_id_domain": "Mail.Example.COM."}))
    second = build_message(**_arguments({}))
    assert first.message_id.startswith("<")
    assert first.message_id.endswith("@mail.example.com>")
    assert first.message_id != second.message_id
    assert f"Message-ID: {first.message_id}\r\n".encode() in first.raw


def test_date_defaults_to_now() -> None:
    parsed = parse_message(build(date=None))
    assert parsed.date is not None
    assert abs(parsed.date - datetime.now(UTC)) < timedelta(minutes=1)


def test_long_lines_and_non_ascii_bodies_stay_7bit() -> None:
    raw = build(text="x" * 5000 + "\n" + "é" * 3000 + "\n", html="<p>" + "y" * 2000 + "</p>")
    assert_wire_safe(raw)
    parsed = parse_message(raw)
    assert parsed.text == "x" * 5000 + "\n" + "é" * 3000 + "\n"


def test_idn_domains_are_written_in_ascii() -> None:
    raw = build(to=["Bücher <info@bücher.example>"])
    assert_wire_safe(raw)
    assert parse_message(raw).to == (Mailbox("Bücher", "info@xn--bcher-kva.example"),)


def test_recipients_are_the_envelope_without_repeats() -> None:
    built = build_message(
        **_arguments({"to": ["A@Example.org", "b@example.org"], "cc": ["a@example.org"]})
    )
    assert built.recipients == ("a@example.org", "b@example.org")


def test_a_single_string_is_one_recipient() -> None:
    built = build_message(**_arguments({"to": "bob@example.org", "cc": "carol@example.org"}))
    assert built.recipients == ("bob@example.org", "carol@example.org")


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (b"From: a@example.com\r\nSubject: inner\r\n\r\nhello\r\n", b"7bit"),
        ("From: a@example.com\r\nSubject: inner\r\n\r\nh\u00e9llo\r\n".encode(), b"base64"),
    ],
)
def test_forwarded_message_attachment(content: bytes, encoding: bytes) -> None:
    raw = build(attachments=[OutgoingAttachment("fwd.eml", content, "message/rfc822")])
    assert_wire_safe(raw)
    assert b"Content-Transfer-Encoding: " + encoding in raw
    (attached,) = parse_message(raw).attachments
    assert attached.content_type == "message/rfc822"
    assert parse_message(attached.content()).subject == "inner"


# -- replies ----------------------------------------------------------------------------


def parent(**headers: str) -> ParsedMessage:
    lines = {
        "From": "Bob <bob@example.org>",
        "To": "agent@example.com",
        "Subject": "Question",
        "Date": "Mon, 20 May 2024 10:00:00 +0000",
        "Message-ID": "<q1@example.org>",
    }
    lines.update(headers)
    head = "".join(f"{name}: {value}\r\n" for name, value in lines.items() if value)
    return parse_message(head.encode() + b"\r\nWhat time is it?\r\n")


def test_reply_has_threading_headers() -> None:
    question = parent(References="<root@example.org> <middle@example.org>")
    raw = build(subject=question.subject, in_reply_to=question)
    reply = parse_message(raw)
    assert reply.subject == "Re: Question"
    assert reply.in_reply_to == "<q1@example.org>"
    assert reply.references == ("<root@example.org>", "<middle@example.org>", "<q1@example.org>")
    assert dict(reply.headers)["Auto-Submitted"] == "auto-replied"
    assert thread_keys(parse_headers(raw)).references[0] == "<q1@example.org>"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Question", "Re: Question"),
        ("Re: Question", "Re: Question"),
        ("RE: Question", "RE: Question"),
        ("AW: Frage", "AW: Frage"),
        ("[team] Re: Question", "[team] Re: Question"),
        ("Fwd: Question", "Re: Fwd: Question"),
        ("", "Re: "),
    ],
)
def test_reply_prefix_is_added_once(subject: str, expected: str) -> None:
    raw = build(subject=subject, in_reply_to=parent())
    assert parse_message(raw).subject == expected


def test_reply_without_references_cites_in_reply_to() -> None:
    question = parent(**{"In-Reply-To": "<before@example.org>"})
    reply = parse_message(build(in_reply_to=question))
    assert reply.references == ("<before@example.org>", "<q1@example.org>")


def test_reply_to_a_message_without_message_id() -> None:
    reply = parse_message(build(in_reply_to=parent(**{"Message-ID": ""})))
    assert (reply.in_reply_to, reply.references) == (None, ())
    assert dict(reply.headers)["Auto-Submitted"] == "auto-replied"


def test_long_reference_chains_keep_the_root_and_the_latest() -> None:
    chain = " ".join(f"<m{i}@example.org>" for i in range(60))
    reply = parse_message(build(in_reply_to=parent(References=chain)))
    assert len(reply.references) == MAX_REFERENCES
    assert reply.references[0] == "<m0@example.org>"
    assert reply.references[-2:] == ("<m59@example.org>", "<q1@example.org>")


def test_unusable_parent_ids_are_not_repeated() -> None:
    question = parent(References=f"<{'x' * 300}@example.org> <ok@example.org>")
    reply = parse_message(build(in_reply_to=question))
    assert reply.references == ("<ok@example.org>", "<q1@example.org>")


def test_auto_submitted_is_configurable() -> None:
    assert b"Auto-Submitted: auto-generated\r\n" in build(auto_submitted="auto-generated")
    assert b"Auto-Submitted: no\r\n" in build(in_reply_to=parent(), auto_submitted="no")
    assert b"Auto-Submitted" not in build()
    with pytest.raises(InvalidInput) as caught:
        build(auto_submitted="auto-replied; x\r\nBcc: e@evil.example")
    assert caught.value.field == "auto_submitted"


# -- refusals: injection and invalid input ----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.net"}, "subject"),
        ({"subject": "Hi\nX-Evil: 1"}, "subject"),
        ({"subject": "Hi\rX-Evil: 1"}, "subject"),
        ({"to": ["bob@example.org\r\nBcc: victim@example.net"]}, "to"),
        ({"to": ["Bob\r\nBcc: victim@example.net <bob@example.org>"]}, "to"),
        ({"cc": ["carol@example.org\n"]}, "cc"),
        ({"sender": "agent@example.com\r\nX-Evil: 1"}, "sender"),
        ({"reply_to": "r@example.com\nBcc: v@example.net"}, "reply_to"),
        ({"headers": {"X-Campaign": "a\r\nBcc: v@example.net"}}, "headers.X-Campaign"),
        ({"headers": {"X-Bad\r\nBcc": "v@example.net"}}, "headers"),
        ({"headers": {"X Bad": "v"}}, "headers"),
        ({"headers": {"Bcc": "v@example.net"}}, "headers.Bcc"),
        ({"headers": {"content-type": "text/html"}}, "headers.content-type"),
        ({"attachments": [OutgoingAttachment("a\r\n.txt", b"")]}, "attachments[0].filename"),
        (
            {"attachments": [OutgoingAttachment("a.txt", b"", "text/plain\r\nX: y")]},
            "attachments[0].content_type",
        ),
        (
            {"attachments": [OutgoingAttachment("a", b"", "nonsense")]},
            "attachments[0].content_type",
        ),
        (
            {"attachments": [OutgoingAttachment("a", b"", "multipart/mixed")]},
            "attachments[0].content_type",
        ),
        (
            {"attachments": [OutgoingAttachment("a", b"", content_id="x\r\ny")]},
            "attachments[0].content_id",
        ),
        (
            {"attachments": [OutgoingAttachment("a", b"", content_id="<a b>")]},
            "attachments[0].content_id",
        ),
        ({"attachments": [OutgoingAttachment("a", "text")]}, "attachments[0].content"),  # type: ignore[arg-type]
        ({"text": "broken \udc80 surrogate"}, "text"),
        ({"html": "broken \ud800"}, "html"),
        ({"subject": 42}, "subject"),
        ({"to": []}, "to"),
        ({"to": ["not an address"]}, "to"),
        ({"cc": ["a@b"]}, "cc"),
        ({"to": ["jörg@example.org"]}, "to"),  # SMTPUTF8 local part
        ({"message_id_domain": "not a domain"}, "message_id_domain"),
        ({"date": datetime(2024, 5, 20, 14, 30)}, "date"),
    ],
)
def test_invalid_input_is_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        build(**overrides)
    assert caught.value.field == field


def test_invalid_addresses_raise_invalid_address() -> None:
    with pytest.raises(InvalidAddress, match="not an address"):
        build(to=["not an address"])


# -- properties -------------------------------------------------------------------------

# Header text: any characters but controls, surrogates and unassigned code points.
HEADER_TEXT = st.text(
    st.characters(exclude_categories=["Cc", "Cs", "Cn", "Zl", "Zp"]), max_size=120
)
BODY_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=400)


def expected_body(text: str) -> str:
    """What a body reads as after the trip: line ends as ``\\n``, one at the end, no NUL."""
    lines = text.replace("\0", "\ufffd").encode().splitlines()
    return "\n".join(line.decode() for line in lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=HEADER_TEXT, text=BODY_TEXT, html=st.none() | BODY_TEXT, name=HEADER_TEXT)
def test_round_trip_of_arbitrary_text(subject: str, text: str, html: str | None, name: str) -> None:
    raw = build(
        subject=subject,
        text=text,
        html=html,
        attachments=[OutgoingAttachment(name or "x", b"data")],
    )
    assert_wire_safe(raw)
    parsed = parse_message(raw)
    assert parsed.subject == subject.lstrip(" ")  # a header value's leading spaces are lost
    assert parsed.text == expected_body(text)
    assert parsed.html == (None if html is None else expected_body(html))
    (attachment,) = parsed.attachments
    assert attachment.filename == ((name or "x").strip() or None)
    assert attachment.content() == b"data"


DISPLAY_NAMES = HEADER_TEXT | st.text(alphabet='<>@"\\,;:() ab.é', max_size=30)


@settings(max_examples=200, deadline=None)
@given(name=DISPLAY_NAMES)
def test_display_names_never_add_recipients(name: str) -> None:
    try:
        built = build_message(**_arguments({"to": [f"{name} <bob@example.org>"]}))
    except InvalidInput:
        return  # e.g. a name that makes the whole string an invalid address
    assert built.recipients == ("bob@example.org",)
    assert_wire_safe(built.raw)
    (box,) = parse_message(built.raw).to
    assert box.address == "bob@example.org"


@pytest.mark.parametrize(
    "text",
    ["Hello.\n", "Line one\nline two\r\nthree", "Grüße, 日本\n", "x" * 1200, "trailing =\n"],
)
@pytest.mark.parametrize("reply", [False, True])
def test_the_plain_fast_path_writes_what_the_general_path_writes(text: str, reply: bool) -> None:
    from mailfleet.mail import build as build_module

    parent = parse_message(
        b"From: a@example.org\r\nSubject: Hi\r\nMessage-ID: <p@example.org>\r\n"
        b"References: <r@example.org>\r\n\r\nx\r\n"
    )
    args: dict[str, Any] = {
        "sender": "desk@example.com",
        "to": ["bob@example.org", "carol@example.net"],
        "subject": "Status report",
        "text": text,
        "in_reply_to": parent if reply else None,
        "message_id_domain": "example.com",
    }
    fast = build_module._build_plain(
        args["sender"],
        args["to"],
        args["subject"],
        text,
        args["in_reply_to"],
        "example.com",
        None,
        None,
    )
    assert fast is not None
    # A non-ASCII extra field forces the general path (ASCII ones are written by both).
    general = build_message(**args, headers={"X-Path": "général"})
    one, two = parse_message(fast.raw), parse_message(general.raw)
    for name in ("subject", "from_", "to", "text", "in_reply_to", "references", "html"):
        assert getattr(one, name) == getattr(two, name), name
    assert one.header("Auto-Submitted") == two.header("Auto-Submitted")
    assert one.defects == ()
    assert all(len(line) <= 998 for line in fast.raw.split(b"\r\n"))
    assert b"\n" not in fast.raw.replace(b"\r\n", b"")
    assert fast.raw.isascii()
    assert fast.recipients == general.recipients


@pytest.mark.parametrize("html", [None, "<p>Hello</p>"])
def test_long_ascii_fields_are_folded_at_spaces_never_encoded(html: str | None) -> None:
    """A List-Unsubscribe URL longer than a line stays one word (the email package would
    cut it into RFC 2047 encoded words, which receivers do not read as a URL)."""
    token = "a" * 32
    value = (
        f"<mailto:unsubscribe+{token}@bounces.example.com>, "
        f"<https://mail.example.com/v1/unsubscribe/{token}{token}>"
    )
    built = build_message(
        sender="news@example.com",
        to="ada@example.org",
        subject="News",
        text="Hello",
        html=html,
        message_id_domain="example.com",
        headers={"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )
    head = built.raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert "=?" not in head
    assert f"List-Unsubscribe: <mailto:unsubscribe+{token}@bounces.example.com>,\r\n <https" in head
    assert head.index("List-Unsubscribe-Post:") < head.index("MIME-Version:")
    parsed = message_from_bytes(built.raw)
    assert " ".join(str(parsed["List-Unsubscribe"]).split()) == value
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parse_message(built.raw).defects == ()
