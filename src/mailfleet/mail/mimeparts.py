"""A light MIME walk for reading reports: header blocks, parts, decoded text; never raises.

Delivery reports are read for a few fields, so this module does not build the
stdlib's full message model (:mod:`.parse` does, for mail shown to agents): it
splits header blocks and multipart bodies itself, decodes a part's transfer
encoding and charset only when its text is asked for, and never descends into
an attached ``message/rfc822`` (its headers are read with :func:`split_head`
when needed). Malformed input is read as far as it goes: a missing closing
boundary ends the part at the end of the input, a line that is not a header
field ends the header block, an unknown or wrong charset falls back to UTF-8
and then Windows-1252; each such problem is appended to the caller's
``defects`` list. Every string it gives can be stored: NUL and lone
surrogates become U+FFFD.
"""

from __future__ import annotations

import binascii
import html
import re
from dataclasses import dataclass

from .headers import decode_words, storable

__all__ = [
    "MAX_DEPTH",
    "MAX_PARTS",
    "Headers",
    "Part",
    "decode_bytes",
    "decode_words",
    "html_to_text",
    "part_text",
    "read_part",
    "split_head",
    "transfer_decoded",
    "walk",
]

MAX_PARTS = 64
"""Leaf parts read from one message; the rest is ignored (with a defect)."""
MAX_DEPTH = 8
"""How deep multiparts nest before the walk stops descending."""
MAX_FIELDS = 400
"""Header fields read from one header block."""

_FIELD_LINES = re.compile(
    rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)(?:\r?\n|\r|$)"
)
"""One header field with its continuation lines (the name: printable ASCII but the colon)."""
_BLOCK = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+[ \t]*:[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*(?:\r?\n|\r|$))*"
)
_BLANK = re.compile(rb"[ \t]*(?:\r?\n|\r|$)")
_FOLD = re.compile(rb"\r?\n[ \t]*")
_PARAM = re.compile(r'(?<![\w.*-])([\w.*-]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"?|[^;\s]*)')
"""A parameter; a name starts where no name character is before it (else a long run of
them that no ``=`` follows was scanned again from each of its characters: quadratic)."""


class Headers:
    """A header block: fields by lower-case name, in order, values unfolded and trimmed."""

    __slots__ = ("_index", "fields")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self.fields = fields
        """``(lower-case name, value)`` in order."""
        self._index: dict[str, list[str]] = {}
        for name, value in fields:
            self._index.setdefault(name, []).append(value)

    def get(self, name: str) -> str | None:
        """The first value of the field ``name`` (lower case), or None."""
        values = self._index.get(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of the field ``name`` (lower case), in order."""
        return self._index.get(name, [])

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def text(self) -> str:
        """The block written out again, one field a line (for searching)."""
        return "\n".join(f"{name}: {value}" for name, value in self.fields)


@dataclass(slots=True)
class Part:
    """One MIME entity: its headers, content type and raw (undecoded) body."""

    headers: Headers
    ctype: str
    """``type/subtype``, lower case (``text/plain`` when absent or unreadable)."""
    params: dict[str, str]
    """Content-Type parameters, names lower case."""
    body: bytes

    @property
    def maintype(self) -> str:
        return self.ctype.partition("/")[0]


def split_head(raw: bytes, *, whole: bool = False) -> tuple[Headers, bytes]:
    """The header block of ``raw`` and the body after it.

    The block ends at the first empty line, or at the first line that is
    neither a field nor a continuation (that line starts the body, as in the
    stdlib). An mbox ``From `` line first is skipped; so are, for a ``whole``
    message (not a MIME part), blank lines before the first field.
    """
    pos = 0
    size = len(raw)
    if whole:
        stripped = raw.lstrip(b" \t\r\n")
        pos = size - len(stripped)
        pos = raw.rfind(b"\n", 0, pos) + 1 if pos else 0
    if raw.startswith(b"From ", pos):
        newline = raw.find(b"\n", pos)
        pos = size if newline == -1 else newline + 1
    block = _BLOCK.match(raw, pos)
    end = block.end() if block is not None else pos
    fields = _FIELD_LINES.findall(raw, pos, end)[:MAX_FIELDS]
    blank = _BLANK.match(raw, end)
    if blank is not None and end < size:
        end = blank.end()
    decoded: list[tuple[str, str]] = []
    for name, value in fields:
        if b"\n" in value:
            value = _FOLD.sub(b" ", value)
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("cp1252", "replace")
        decoded.append((name.decode("ascii").lower(), storable(text.strip())))
    return Headers(decoded), raw[end:]


def _content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value:
        return "text/plain", {}
    main, _, rest = value.partition(";")
    ctype = "".join(main.split()).lower()
    if ctype.count("/") != 1 or ctype.startswith("/") or ctype.endswith("/"):
        ctype = "text/plain"
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        name, raw = match[1].lower().rstrip("*"), match[2]
        if raw.startswith('"'):
            raw = raw[1:-1] if raw.endswith('"') and len(raw) > 1 else raw[1:]
            raw = raw.replace('\\"', '"').replace("\\\\", "\\")
        params.setdefault(name, raw)
    return ctype, params


def read_part(raw: bytes, *, whole: bool = False) -> Part:
    """One MIME entity from its bytes (headers, then body); ``whole`` for a message."""
    headers, body = split_head(raw, whole=whole)
    ctype, params = _content_type(headers.get("content-type"))
    return Part(headers, ctype, params, body)


def _children(body: bytes, boundary: str, defects: list[str]) -> list[bytes] | None:
    """The bodies between the boundary lines, or None when there is none."""
    token = b"--" + boundary.encode("utf-8", "replace")
    pieces: list[bytes] = []
    start: int | None = None
    found = False
    pos = 0
    while True:
        at = body.find(token, pos)
        if at == -1:
            break
        pos = at + 1
        if at and body[at - 1] not in b"\r\n":
            continue
        after = at + len(token)
        closing = body.startswith(b"--", after)
        eol = body.find(b"\n", after)
        eol = len(body) if eol == -1 else eol
        if body[after + (2 if closing else 0) : eol].strip():
            continue  # a longer boundary that starts with this one
        found = True
        if start is not None:
            end = at
            if end and body[end - 1] == 0x0A:
                end -= 1
            if end and body[end - 1] == 0x0D:
                end -= 1
            pieces.append(body[start : max(start, end)])
            if len(pieces) >= MAX_PARTS:
                defects.append(f"more than {MAX_PARTS} parts: the rest is ignored")
                return pieces
        if closing:
            return pieces
        start = eol + 1
    if not found:
        return None
    if start is not None:
        pieces.append(body[start:])
        defects.append("a multipart has no closing boundary (truncated?)")
    return pieces


def walk(message: Part, defects: list[str]) -> list[Part]:
    """The leaf parts of ``message`` in order (an embedded message is one leaf).

    A multipart without a usable boundary is read as one text part.
    """
    leaves: list[Part] = []

    def visit(part: Part, depth: int) -> None:
        if len(leaves) >= MAX_PARTS:
            return
        if part.maintype != "multipart":
            leaves.append(part)
            return
        boundary = part.params.get("boundary")
        children = _children(part.body, boundary, defects) if boundary else None
        if children is None or depth >= MAX_DEPTH:
            defects.append(
                "a multipart nests too deep"
                if children is not None
                else "a multipart has no boundary in its body: read as text"
            )
            leaves.append(Part(part.headers, "text/plain", {}, part.body))
            return
        for child in children:
            visit(read_part(child), depth + 1)

    visit(message, 0)
    return leaves


_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def transfer_decoded(part: Part, defects: list[str]) -> bytes:
    """The part's body with its Content-Transfer-Encoding (base64, quoted-printable) undone."""
    encoding = (part.headers.get("content-transfer-encoding") or "").strip().lower()
    if encoding == "base64":
        data = _NOT_BASE64.sub(b"", part.body)
        data = data[: len(data) - len(data) % 4]
        try:
            return binascii.a2b_base64(data)
        except (binascii.Error, ValueError):
            defects.append("a part's base64 is broken: read as is")
            return part.body
    if encoding == "quoted-printable":
        try:
            return binascii.a2b_qp(part.body)
        except (binascii.Error, ValueError):
            defects.append("a part's quoted-printable is broken: read as is")
    return part.body


_CHARSET_ALIASES = {
    "utf8": "utf-8",
    "unicode-1-1-utf-8": "utf-8",
    "ks_c_5601-1987": "cp949",
    "x-sjis": "shift_jis",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-mac-roman": "mac_roman",
}
_NO_CHARSET = frozenset({"", "x-unknown", "unknown", "unknown-8bit", "default", "x-user-defined"})


def decode_bytes(data: bytes, charset: str | None, defects: list[str]) -> str:
    """``data`` as text: the declared charset, else UTF-8, else Windows-1252; always
    :func:`~.headers.storable` (NUL and lone surrogates become U+FFFD)."""
    name = (charset or "").strip().strip("'\"").lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name not in _NO_CHARSET:
        try:
            return storable(data.decode(name))
        except LookupError:
            defects.append(f"unknown charset {storable(name[:40])!r}")
        except (ValueError, TypeError):
            defects.append(f"the text does not match its charset {storable(name[:40])!r}")
    try:
        return storable(data.decode("utf-8"))
    except UnicodeDecodeError:
        return storable(data.decode("cp1252", "replace"))


def part_text(part: Part, defects: list[str]) -> str:
    """The part's body as text: transfer encoding and charset decoded, HTML as plain text."""
    text = decode_bytes(transfer_decoded(part, defects), part.params.get("charset"), defects)
    return html_to_text(text) if part.ctype == "text/html" else text


_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)
_BREAKS = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d|/table|p|div|tr|li)\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\xa0]+")


def html_to_text(markup: str) -> str:
    """Text of an HTML body: block ends become line breaks, tags go, entities decoded."""
    text = _DROP.sub(" ", markup)
    text = _BREAKS.sub("\n", text)
    text = html.unescape(_TAG.sub(" ", text))
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines())
