"""The header read done on arrival: fast, tolerant, never raises (full MIME: :mod:`.parse`)."""

from __future__ import annotations

import re
from email.header import decode_header, make_header
from email.utils import getaddresses

from ..model.messages import MessageHeaders

__all__ = [
    "MAX_ADDRESS_CHARS",
    "MAX_COMMENT_DEPTH",
    "MAX_HEADER_BYTES",
    "MAX_WORDS_AT_ONCE",
    "address_pairs",
    "comment_depth",
    "decode_words",
    "parse_headers",
    "storable",
]

MAX_WORDS_AT_ONCE = 50
"""Encoded words the stdlib decodes in one call; longer headers are decoded in pieces."""

MAX_ADDRESS_CHARS = 65_536
"""Characters of an address field read for ``sender`` and ``recipients``."""

MAX_COMMENT_DEPTH = 20
"""Deeper nested comments (parentheses) make a value unreadable as addresses: the stdlib's
parsers recurse per level, and would fail or not depending on how deep the caller's stack
already is (a ``RecursionError`` that escaped here once refused mail with 451)."""

MAX_HEADER_BYTES = 262_144
"""Bytes of the header block read on arrival (up to the last whole line); fields past it
are not read there (the raw message keeps them, and the full parse reads them)."""


def parse_headers(raw: bytes) -> MessageHeaders:
    """Read the header block of ``raw`` quickly; malformed headers never raise.

    This is the hot path of every delivery, so it splits the header block
    itself (about 4x cheaper than the stdlib's ``compat32`` parser and 15x
    cheaper than ``email.policy.default``): fields are unfolded, the block
    ends at the first empty line or at the first line that is not a field
    (as in the stdlib), bytes that are not UTF-8 become U+FFFD, and RFC 2047
    words are decoded only where they appear. Every string it gives is
    :func:`storable`. Its cost is linear in the size of the header block
    and bounded: it reads the first :data:`MAX_HEADER_BYTES` of the header
    block, and addresses from the first :data:`MAX_ADDRESS_CHARS` characters
    of a field (the MX calls it in its event loop). The full MIME model is
    :func:`mailfleet.mail.parse.parse_message`.
    """
    headers: list[tuple[str, str]] = []
    first: dict[str, str] = {}
    for name, value in _fields(raw):
        text = value.strip()  # NUL is gone already (see _fields)
        if "=?" in text:
            text = decode_words(text)
        headers.append((name, text))
        first.setdefault(name.lower(), text)
    senders = _addresses(first, "from")
    return MessageHeaders(
        sender=senders[0] if senders else None,
        recipients=tuple(_addresses(first, "to", "cc")),
        subject=first.get("subject") or None,
        message_id=(first.get("message-id") or "").strip() or None,
        headers=tuple(headers),
    )


_FIELD = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*(.*)", re.DOTALL)
_BREAK = re.compile(r"\r\n|\r|\n")
_COMPLEX = re.compile(r'[,"()\\;:]')
"""Address-list syntax the simple path leaves to ``email.utils.getaddresses``."""


def _fields(raw: bytes) -> list[tuple[str, str]]:
    """The header fields of ``raw`` as (name, unfolded value), in order."""
    end = raw.find(b"\n\n")
    crlf = raw.find(b"\r\n\r\n")
    if crlf != -1 and (end == -1 or crlf < end):
        end = crlf
    if end == -1:
        end = len(raw)
    if end > MAX_HEADER_BYTES:  # an absurd header block: its start, up to a whole line
        end = max(raw.rfind(b"\n", 0, MAX_HEADER_BYTES), 0)
    block = raw[:end].decode("utf-8", "replace")
    if "\x00" in block:
        block = block.replace("\x00", "\ufffd")
    fields: list[tuple[str, str]] = []
    lines = _BREAK.split(block)
    if lines and lines[0].startswith("From "):  # an mbox separator, not a field
        del lines[0]
    for line in lines:
        if line[:1] in (" ", "\t"):
            if fields:  # a continuation: unfold it into the field above
                name, value = fields[-1]
                fields[-1] = (name, value + line)
            continue
        match = _FIELD.fullmatch(line)
        if match is None:  # not a field: the header block ends here
            break
        fields.append((match[1], match[2]))
    return fields


def _addresses(first: dict[str, str], *names: str) -> list[str]:
    """The addresses in the named fields; simple values skip the full parser."""
    values = [first[name] for name in names if first.get(name)]
    found: list[str] = []
    for value in values:
        if _COMPLEX.search(value):
            found.extend(address for _, address in address_pairs(value) if address)
            continue
        _, bracket, rest = value.rpartition("<")
        address = (rest.partition(">")[0] if bracket else value).strip()
        if address and len(address.split()) == 1:
            found.append(address)
    return found


_COMMENT_MARKS = re.compile(r"\\.|[()]", re.DOTALL)


def comment_depth(text: str) -> int:
    """How deep the parentheses of ``text`` nest (quoted pairs skipped); 0 when there are
    no more than :data:`MAX_COMMENT_DEPTH` of them."""
    if text.count("(") <= MAX_COMMENT_DEPTH:
        return 0
    depth = deepest = 0
    for mark in _COMMENT_MARKS.finditer(text):
        if mark[0] == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif mark[0] == ")":
            depth = max(0, depth - 1)
    return deepest


def address_pairs(value: str) -> list[tuple[str, str]]:
    """``email.utils.getaddresses`` of one address-list value, bounded; never raises.

    Reads the first :data:`MAX_ADDRESS_CHARS` characters (cut after the last
    whole address); a value whose comments nest deeper than
    :data:`MAX_COMMENT_DEPTH`, or that the stdlib cannot parse, gives no address.
    """
    if len(value) > MAX_ADDRESS_CHARS:
        cut = value.rfind(",", 0, MAX_ADDRESS_CHARS)
        value = value[: cut if cut > 0 else MAX_ADDRESS_CHARS]
    if comment_depth(value) > MAX_COMMENT_DEPTH:
        return []
    try:
        return getaddresses([value])
    except Exception:  # the stdlib's parser has edge cases that raise
        return []


_UNSTORABLE = re.compile("[\ud800-\udfff\x00]")
_WORD_GAP = re.compile(r"(?<=\?=)[ \t]+(?==\?)")
"""Whitespace between two encoded words: not part of the text (RFC 2047 section 6.2)."""


def storable(text: str) -> str:
    """``text`` with what the store cannot hold (NUL, lone surrogates) replaced by U+FFFD.

    PostgreSQL's text and JSONB refuse both; a lone surrogate cannot even be
    encoded to UTF-8.
    """
    return _UNSTORABLE.sub("\ufffd", text)


def decode_words(value: str) -> str:
    """``value`` with its RFC 2047 encoded words decoded, as ``email.header`` does it;
    never raises, and the result is :func:`storable`.

    A piece whose words do not decode (unknown charset, broken base64, bytes
    that are not the declared charset) is kept as written. The stdlib's
    decoder is quadratic in the number of words (a 1.4 MB subject took over a
    minute), so a value with more than :data:`MAX_WORDS_AT_ONCE` words is
    decoded in pieces of at most that many, cut only where whitespace
    separates two encoded words (whitespace the decoded text drops anyway); a
    run of more words with no such gap is kept as written.
    """
    if "=?" not in value:
        return storable(value)
    if value.count("=?") <= MAX_WORDS_AT_ONCE:
        return storable(_decode_piece(value))
    decoded: list[str] = []
    group: list[str] = []
    words = 0
    for segment in [*_WORD_GAP.split(value), ""]:
        count = segment.count("=?")
        if group and (words + count > MAX_WORDS_AT_ONCE or not segment):
            piece = " ".join(group)
            decoded.append(_decode_piece(piece) if words <= MAX_WORDS_AT_ONCE else piece)
            group, words = [], 0
        group.append(segment)
        words += count
    return storable("".join(decoded))


def _decode_piece(text: str) -> str:
    try:
        return str(make_header(decode_header(text)))
    except Exception:  # unknown charset, broken word, a codec's own error: kept as written
        return text
