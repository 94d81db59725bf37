"""The ``Authentication-Results`` header (RFC 8601) in a received message's bytes.

The MX records what it verified (:class:`~mailfleet.model.authentication.Authentication`)
as a header field at the top of the message it stores:
:func:`add_authentication_results` first removes every
``Authentication-Results`` field that claims the MX's own authserv-id (a
sender may write one to pass itself off as verified; RFC 8601 section 5),
keeps those of other hosts, and prepends ours, folded, with the message's
own line endings. :func:`results_header` builds the value,
:func:`authserv_id` reads the authserv-id of a field's value.
"""

from __future__ import annotations

import re

from ..model.authentication import results_header

__all__ = [
    "FIELD_NAME",
    "add_authentication_results",
    "authserv_id",
    "fold",
    "results_header",
    "strip_authentication_results",
]

FIELD_NAME = "Authentication-Results"

_LINE_LIMIT = 78  # RFC 5322 2.1.1: lines SHOULD be no longer
_HEADER_END = re.compile(rb"\r?\n(\r?\n)")
_FIELD = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)
_TOKEN_STOP = frozenset(' \t\r\n();"')


def add_authentication_results(raw: bytes, value: str, *, authserv_id: str) -> bytes:
    """``raw`` without the fields claiming ``authserv_id``, with ``Authentication-Results:
    value`` on top (folded; CRLF or LF as ``raw`` ends its lines)."""
    linesep = b"\n" if _uses_lf(raw) else b"\r\n"
    field = fold(FIELD_NAME, value, linesep=linesep.decode())
    return field.encode("ascii", "replace") + strip_authentication_results(raw, authserv_id)


def strip_authentication_results(raw: bytes, authserv_id_: str) -> bytes:
    """``raw`` without the ``Authentication-Results`` fields whose authserv-id is
    ``authserv_id_`` (compared without case); every other byte is kept as it is."""
    block_end = _header_end(raw)
    if not _FIELD.search(raw, 0, block_end):
        return raw
    ours = authserv_id_.strip().lower()
    kept: list[bytes] = []
    for start, stop in _field_spans(raw, block_end):
        text = raw[start:stop]
        match = _FIELD.match(text)
        if match is not None:
            claimed = authserv_id(text[match.end() :].decode("latin-1"))
            if claimed is not None and claimed.lower() == ours:
                continue
        kept.append(text)
    return b"".join(kept) + raw[block_end:]


def authserv_id(value: str) -> str | None:
    """The authserv-id that opens an ``Authentication-Results`` value (comments and
    folding skipped, a quoted-string unquoted), or None when there is none."""
    at = _skip_cfws(value, 0)
    if at >= len(value):
        return None
    if value[at] == '"':
        text: list[str] = []
        at += 1
        while at < len(value) and value[at] != '"':
            if value[at] == "\\" and at + 1 < len(value):
                at += 1
            if value[at] not in "\r\n":
                text.append(value[at])
            at += 1
        return "".join(text) if at < len(value) else None
    start = at
    while at < len(value) and value[at] not in _TOKEN_STOP:
        at += 1
    return value[start:at] or None


def fold(name: str, value: str, *, linesep: str = "\r\n") -> str:
    """``name: value`` as a header field ending in ``linesep``: a line per result
    (after each ``;`` outside quotes and comments), longer ones broken at spaces."""
    segments = _split_results(value)
    lines: list[str] = []
    for index, segment in enumerate(segments):
        text = segment + (";" if index < len(segments) - 1 else "")
        first = f"{name}: " if index == 0 else "\t"
        lines.extend(_wrap(first, text))
    return linesep.join(lines) + linesep


def _wrap(first: str, text: str) -> list[str]:
    """``first + text`` broken at spaces into lines of at most 78 characters where
    possible; each break keeps its space (``CRLF SP``), so unfolding gives ``text`` back."""
    words = text.split(" ")
    lines: list[str] = []
    current = first + words[0]
    for word in words[1:]:
        if word and current.strip() and len(current) + 1 + len(word) > _LINE_LIMIT:
            lines.append(current)
            current = " " + word
        else:
            current += " " + word
    lines.append(current)
    return lines


def _split_results(value: str) -> list[str]:
    """``value`` cut at each ``;`` that is outside quoted-strings and comments, trimmed."""
    parts: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for at, char in enumerate(value):
        if escaped:
            escaped = False
        elif char == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif char == ";" and not depth:
            parts.append(value[start:at].strip())
            start = at + 1
    parts.append(value[start:].strip())
    return [part for part in parts if part]


def _skip_cfws(value: str, at: int) -> int:
    """The position after whitespace, folding and (nested) comments from ``at``."""
    depth = 0
    while at < len(value):
        char = value[at]
        if depth:
            if char == "\\":
                at += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        elif char not in " \t\r\n":
            return at
        at += 1
    return at


def _field_spans(raw: bytes, block_end: int) -> list[tuple[int, int]]:
    """The byte ranges of the header fields in ``raw[:block_end]``, each with its
    continuation lines and line ending (anything before the first field is one span)."""
    spans: list[tuple[int, int]] = []
    start = 0
    at = 0
    while at < block_end:
        newline = raw.find(b"\n", at, block_end)
        line_end = block_end if newline < 0 else newline + 1
        if at > start and raw[at : at + 1] not in (b" ", b"\t"):
            spans.append((start, at))
            start = at
        at = line_end
    if block_end > start:
        spans.append((start, block_end))
    return spans


def _header_end(raw: bytes) -> int:
    """Where the header block ends: after its last field's line ending, before the
    blank line (the whole message when no blank line ends it)."""
    if raw.startswith((b"\n", b"\r\n")):
        return 0
    end = _HEADER_END.search(raw)
    return len(raw) if end is None else end.start(1)


def _uses_lf(raw: bytes) -> bool:
    """Whether ``raw`` ends its first line with a bare LF."""
    newline = raw.find(b"\n")
    return newline == 0 or (newline > 0 and raw[newline - 1 : newline] != b"\r")
