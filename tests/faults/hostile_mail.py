"""Hypothesis strategies for hostile mail: structured messages, mangled on purpose.

The messages are built as a MIME tree (random headers, nested multiparts,
embedded messages, leaves in every transfer encoding and many charsets) and
then mangled where parsers break: RFC 2047 words that lie about their
charset or encoding, boundaries that are declared but not used (or used but
not closed, or are a prefix of another), charsets that name no text codec,
lines far past any limit, NUL and 8-bit bytes where 7-bit ASCII is expected,
and a random mix of CRLF, LF and CR line ends. Shared by
``test_fuzz_mime.py`` and ``test_fuzz_reports.py``.
"""

from __future__ import annotations

import base64
import binascii
import quopri

from hypothesis import strategies as st

CHARSETS = [
    "us-ascii",
    "utf-8",
    "UTF-8",
    "iso-8859-1",
    "windows-1252",
    "koi8-r",
    "shift_jis",
    "iso-2022-jp",
    "gb2312",
    "big5",
    "euc-kr",
    "utf-16",
    "utf-16-le",
    "utf-32",
    "utf-7",
    # not text codecs, or codecs that make lone surrogates or raise odd errors
    "unicode_escape",
    "raw_unicode_escape",
    "idna",
    "punycode",
    "base64",
    "zlib",
    "rot13",
    "uu",
    "hex",
    "undefined",
    "mbcs",
    "x-unknown",
    "unknown-8bit",
    "",
    "'utf-8'",
    '"koi8-r',
    "utf-8\x00",
    "\xe9t\xe9",
    "a" * 300,
]
"""Declared charsets: real ones, wrong ones, and names that are no text codec at all."""

ENCODINGS = [
    "7bit",
    "8bit",
    "binary",
    "base64",
    "BASE64",
    "quoted-printable",
    "x-uuencode",
    "uuencode",
    "x-gzip",
    "",
    " base64 ",
    "base64; junk",
]

TYPES = [
    "text/plain",
    "text/html",
    "TEXT/PLAIN",
    "application/octet-stream",
    "image/png",
    "message/delivery-status",
    "message/feedback-report",
    "text/rfc822-headers",
    "message/disposition-notification",
    "text",
    "/",
    "text/",
    "multipart/mixed",  # a leaf that claims to be a multipart
    "application/json",
]

HEADER_NAMES = [
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Sender",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Return-Path",
    "Content-ID",
    "Content-Disposition",
    "Content-Description",
    "MIME-Version",
    "Auto-Submitted",
    "Precedence",
    "List-Id",
    "X-Failed-Recipients",
    "Received",
    "DKIM-Signature",
    "Authentication-Results",
    "X-Mailer",
]

_RAW_CHUNKS = [
    b"\x00",
    b"\xff\xfe",
    b"\xc3",
    b"\xc3\xa9",
    b"\xe2\x82",
    b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8
    b"\x1b$B",  # an ISO-2022-JP shift with nothing after it
    b"\\",
    b'"',
    b"(",
    b")",
    b"<",
    b">",
    b"@",
    b",",
    b";",
    b":",
    b"=?",
    b"?=",
    b"==",
    b"\t",
    b" ",
    b"\r",
    b"\n ",
    b"\r\n\t",
    b"\x85",
    "\u2028".encode(),
]


@st.composite
def encoded_word(draw: st.DrawFn) -> bytes:
    """An RFC 2047 word, well-formed or not: its charset, encoding and payload may all lie."""
    charset = draw(st.sampled_from([*CHARSETS, "utf-8*en", "iso-8859-1*"]))
    encoding = draw(st.sampled_from(["b", "B", "q", "Q", "x", ""]))
    payload = draw(st.binary(max_size=30))
    style = draw(st.integers(0, 4))
    if style == 0:
        text = base64.b64encode(payload)
    elif style == 1:
        text = base64.b64encode(payload)[:-1]  # broken padding
    elif style == 2:
        text = binascii.b2a_qp(payload, header=True)
    elif style == 3:
        text = payload  # raw bytes in the word: 8-bit, NUL, "?" and spaces
    else:
        text = b"=" + payload.hex().upper().encode()[:3]  # a cut =XX escape
    word = b"=?" + charset.encode("utf-8", "replace") + b"?" + encoding.encode() + b"?" + text
    return word + draw(st.sampled_from([b"?=", b"?", b"", b"?= ", b"?==?"]))


def _address_chunk() -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [
            b"ana@example.org",
            b"<bob@example.com>",
            b'"Doe, Jane" <jane@example.net>',
            b"undisclosed-recipients:;",
            b"group: a@example.org, b@example.org;",
            b"<@route.example:c@example.org>",
            b"d@[192.0.2.1]",
            b"e@[IPv6:::1]",
            b'"quoted\\"local"@example.org',
            b"no-domain@",
            b"@no-local",
            b"<unclosed@example.org",
            b"(comment (nested) ",
            b"caf\xc3\xa9@exampl\xc3\xa9.org",
            b"x\x00y@example.org",
            b"=?utf-8?q?Ana_Mar=C3=ADa?= <ana@example.org>",
        ]
    )


def header_value() -> st.SearchStrategy[bytes]:
    """A header value: text, addresses, encoded words, raw 8-bit bytes, folds, or a huge run."""
    chunk = st.one_of(
        st.text(max_size=20).map(lambda t: t.encode("utf-8", "surrogatepass")),
        encoded_word(),
        _address_chunk(),
        st.sampled_from(_RAW_CHUNKS),
        st.binary(max_size=10),
        st.integers(100, 5_000).map(lambda n: b"x" * n),
        st.integers(10, 1_500).map(lambda n: b"=?utf-8?q?a?= " * n),
        st.integers(10, 1_500).map(lambda n: b"<a@b> " * n),
        st.integers(10, 1_000).map(lambda n: b"(" * n + b")" * (n // 2)),
        st.integers(10, 1_000).map(lambda n: b'\\"' * n),
    )
    return st.lists(chunk, max_size=6).map(b" ".join)


def header_name() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.sampled_from(HEADER_NAMES).map(str.encode),
        st.from_regex(rb"\A[!-9;-~]{1,30}\Z"),
        st.sampled_from([b"", b"Bad Name", b"X-\xff", b"From ", b"\x00", b"a" * 2000]),
    )


def header_lines(names: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[bytes]:
    """A few header lines, each ``name: value`` (sometimes without the colon)."""
    line = st.tuples(
        header_name() if names is None else names, st.sampled_from([b": ", b":", b" : ", b""])
    )
    return st.lists(
        st.tuples(line, header_value()).map(lambda t: t[0][0] + t[0][1] + t[1] + b"\n"),
        max_size=8,
    ).map(b"".join)


def _content_type(ctype: str, params: list[tuple[str, bytes]]) -> bytes:
    parts = [ctype.encode()]
    parts += [name.encode() + b"=" + value for name, value in params]
    return b"Content-Type: " + b"; ".join(parts) + b"\n"


@st.composite
def leaf(draw: st.DrawFn) -> bytes:
    """A leaf part: a content type, a charset, a transfer encoding, and a body that may
    or may not be what they say."""
    ctype = draw(st.sampled_from(TYPES))
    charset = draw(st.sampled_from(CHARSETS))
    cte = draw(st.sampled_from(ENCODINGS))
    quoted = draw(st.booleans())
    value = charset.encode("utf-8", "replace")
    params = [("charset", b'"' + value + b'"' if quoted else value)]
    if draw(st.booleans()):
        params.append(("name", draw(header_value())))
    head = _content_type(ctype, params)
    if cte or draw(st.booleans()):
        head += b"Content-Transfer-Encoding: " + cte.encode() + b"\n"
    if draw(st.booleans()):
        head += b"Content-Disposition: " + draw(
            st.sampled_from([b"attachment", b"inline", b"attachment; filename*=utf-8''%E9%ZZ", b""])
        )
        head += b"; filename=" + draw(header_value()) + b"\n"
    head += draw(header_lines())
    body = draw(_body(cte))
    return head + b"\n" + body


@st.composite
def _body(draw: st.DrawFn, cte: str) -> bytes:
    data = draw(
        st.one_of(
            st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
            st.binary(max_size=200),
            st.integers(1_000, 50_000).map(lambda n: b"y" * n),  # one huge line
            st.integers(1_000, 20_000).map(lambda n: b"\x00" * n),
            st.integers(100, 5_000).map(lambda n: b"=\n" * n),
            st.integers(100, 5_000).map(lambda n: b".\r\n" * n),
        )
    )
    style = draw(st.integers(0, 2))
    if style == 0:
        return data  # not encoded as declared
    if "base64" in cte.lower():
        encoded = base64.encodebytes(data)
        return encoded if style == 1 else encoded.replace(b"=", b"") + b"!@#"
    if "quoted" in cte:
        encoded = quopri.encodestring(data)
        return encoded if style == 1 else encoded + b"=Z=\n=4"
    return data


BOUNDARIES = [b"b1", b"=_part_", b"--", b"a b", b"", b"x" * 200, b"\xff\xfe", b"b1b1", b"b"]


@st.composite
def multipart(draw: st.DrawFn, children: st.SearchStrategy[list[bytes]]) -> bytes:
    """A multipart whose boundary may be missing, unused, unclosed, or a prefix of another."""
    subtype = draw(st.sampled_from(["mixed", "alternative", "report", "related", "digest", "x"]))
    declared = draw(st.sampled_from(BOUNDARIES))
    used = declared if draw(st.integers(0, 3)) else draw(st.sampled_from(BOUNDARIES))
    params: list[tuple[str, bytes]] = []
    style = draw(st.integers(0, 4))
    if style == 0:
        params.append(("boundary", b'"' + declared + b'"'))
    elif style == 1:
        params.append(("boundary", declared))
    elif style == 2:
        params.append(("boundary", b'"' + declared))  # unclosed quote
    elif style == 3:
        params += [("boundary", declared), ("boundary", used)]
    if subtype == "report":
        kind = draw(st.sampled_from([b"delivery-status", b"feedback-report", b"", b"\xff"]))
        params.append(("report-type", kind))
    head = _content_type(f"multipart/{subtype}", params) + draw(header_lines())
    body = [draw(st.sampled_from([b"", b"This is a MIME message.\n", b"--\n"]))]
    for child in draw(children):
        body.append(b"--" + used + b"\n" + child + b"\n")
    ending = draw(st.sampled_from(["closed", "open", "cut", "garbage"]))
    if ending == "closed":
        body.append(b"--" + used + b"--\n")
    elif ending == "cut":
        body.append(b"--" + used[: len(used) // 2])
    elif ending == "garbage":
        body.append(b"--" + used + b"-- trailing\n" + draw(st.binary(max_size=40)))
    return head + b"\n" + b"".join(body)


@st.composite
def embedded(draw: st.DrawFn, inner: st.SearchStrategy[bytes]) -> bytes:
    """A message/rfc822 (or message/global) part around a whole message."""
    ctype = draw(st.sampled_from(["message/rfc822", "message/global", "message/partial"]))
    head = _content_type(ctype, [])
    if draw(st.booleans()):
        head += (
            b"Content-Transfer-Encoding: "
            + draw(st.sampled_from([b"base64", b"quoted-printable", b"7bit"]))
            + b"\n"
        )
    content = draw(inner)
    if b"base64" in head and draw(st.booleans()):
        content = base64.encodebytes(content)
    return head + b"\n" + content


def entity() -> st.SearchStrategy[bytes]:
    """A MIME entity tree: leaves, multiparts and embedded messages, a few levels deep."""
    return st.recursive(
        leaf(),
        lambda children: st.one_of(
            multipart(st.lists(children, max_size=4)),
            embedded(children),
        ),
        max_leaves=8,
    )


@st.composite
def line_ends(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` (written with LF) with CRLF, LF, CR or mixed line ends."""
    style = draw(st.sampled_from(["crlf", "lf", "cr", "mixed"]))
    if style == "lf":
        return raw
    if style == "crlf":
        return raw.replace(b"\n", b"\r\n")
    if style == "cr":
        return raw.replace(b"\n", b"\r")
    lines = raw.split(b"\n")
    ends = draw(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r"]), min_size=1, max_size=8))
    return b"".join(line + ends[i % len(ends)] for i, line in enumerate(lines))


@st.composite
def hostile_message(draw: st.DrawFn) -> bytes:
    """A whole message: top-level headers (the usual ones, mangled), then a MIME tree."""
    head = draw(header_lines(st.sampled_from(HEADER_NAMES).map(str.encode)))
    head += draw(header_lines())
    raw = head + draw(entity())
    if draw(st.booleans()):
        raw = b"From MAILER-DAEMON Mon Jun  3 10:00:00 2024\n" + raw  # an mbox line
    return draw(line_ends(raw))


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """A real sample cut, spliced with another, and sprinkled with random bytes."""
    raw = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, len(raw)))
        end = draw(st.integers(start, min(len(raw), start + 80)))
        action = draw(
            st.sampled_from(["delete", "insert", "replace", "duplicate", "truncate", "splice"])
        )
        if action == "delete":
            del raw[start:end]
        elif action == "insert":
            raw[start:start] = draw(st.one_of(st.sampled_from(_RAW_CHUNKS), st.binary(max_size=16)))
        elif action == "replace":
            raw[start:end] = draw(st.binary(min_size=end - start, max_size=end - start))
        elif action == "duplicate":
            raw[start:start] = raw[start:end] * draw(st.integers(1, 50))
        elif action == "truncate":
            del raw[start:]
        else:
            other = draw(st.sampled_from(samples))
            at = draw(st.integers(0, len(other)))
            raw[start:] = other[at:]
    return bytes(raw)
