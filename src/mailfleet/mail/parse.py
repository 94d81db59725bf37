"""Parsing inbound mail: :func:`parse_message` reads any bytes and never raises.

Mail on the open internet is often malformed: broken or missing boundaries,
undeclared 8-bit bytes, unknown charsets, bad base64, headers no RFC allows.
The parser takes what can be read, like a mail client would, and records every
problem it met in :attr:`ParsedMessage.defects` as a short English sentence,
prefixed with the header or the part it concerns (``"part 1.2: ..."``; parts
are numbered like IMAP section numbers). The stdlib ``email`` package does the
MIME work: the tree is parsed with ``compat32`` semantics, which tolerate the
malformed Content-Type headers that make ``policy.default``'s parser raise,
and each header is then decoded on its own by ``policy.default``'s header
registry (encoded words, addresses, dates, RFC 2231 parameters).

How text is decoded, everywhere (bodies, headers, filenames): the declared
charset first, then UTF-8, then Latin-1 (or, for a known multi-byte charset,
that charset with U+FFFD for the broken bytes). Every ``str`` the parser
returns is valid Unicode: it can always be encoded to UTF-8.

How the bodies are chosen, as mail clients do: :attr:`ParsedMessage.text` is
the first ``text/plain`` part that is neither an attachment (disposition
``attachment`` or a filename) nor inside an embedded message, preferring one
inside a ``multipart/alternative``; :attr:`ParsedMessage.html` likewise for
``text/html``. Every other leaf part is an :class:`Attachment`, including
extra inline text parts outside ``multipart/alternative`` (a list footer), so
nothing is lost. An embedded ``message/*`` part is one attachment; its own
parts are checked for defects but not listed.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.errors import MessageDefect
from email.generator import BytesGenerator
from email.header import Header
from email.headerregistry import (
    AddressHeader,
    BaseHeader,
    DateHeader,
    ParameterizedMIMEHeader,
    UnstructuredHeader,
)
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from email.policy import default as default_policy
from email.utils import parsedate_to_datetime
from functools import partial
from io import BytesIO

from ..model.addresses import parse_address
from ..model.errors import InvalidAddress
from .headers import MAX_COMMENT_DEPTH, address_pairs, comment_depth, decode_words, storable

__all__ = [
    "MAX_DEFECTS",
    "MAX_DEPTH",
    "MAX_HEADERS_CHARS",
    "MAX_HEADER_CHARS",
    "MAX_MAILBOXES",
    "MAX_PARTS",
    "Attachment",
    "Mailbox",
    "ParsedMessage",
    "has_reply_prefix",
    "normalize_subject",
    "parse_message",
]

MAX_DEPTH = 32
"""Parts nested deeper than this many multipart or message levels are not read."""

MAX_PARTS = 1000
"""At most this many MIME parts of a message are read."""

MAX_DEFECTS = 100
"""At most this many defects are listed (repeats removed); the last entry counts the rest."""

MAX_HEADER_CHARS = 16_384
"""A longer header is not given to the stdlib's structured parser (whose cost grows with
the square of the encoded words) but decoded leniently, with a defect."""

MAX_HEADERS_CHARS = 131_072
"""Characters of all the headers of a message (every part's) the structured parser reads;
the headers past this budget are decoded leniently, with a defect."""

MAX_MAILBOXES = 1000
"""Mailboxes read from one address header; the rest are left out, with a defect."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One address of an address header: the display name and the address as written.

    ``address`` is kept as the sender wrote it (it may not even be valid: the
    parser records a defect then); :meth:`normalized` gives mailfleet's normal
    form when it is valid.
    """

    name: str | None
    address: str

    def normalized(self) -> str | None:
        """The address in normal form (``local@domain``, lower case), or None if invalid."""
        try:
            return str(parse_address(self.address))
        except InvalidAddress:
            return None

    def __str__(self) -> str:
        if not self.name:
            return self.address
        if _NEEDS_QUOTES.search(self.name):
            escaped = self.name.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{escaped}" <{self.address}>'
        return f"{self.name} <{self.address}>"


_NEEDS_QUOTES = re.compile(r'[()<>\[\]:;@\\,."]')


@dataclass(frozen=True, slots=True)
class Attachment:
    """A part of a message that is not one of its bodies; made by :func:`parse_message`.

    ``filename`` is what the sender declared, decoded (RFC 2231 or encoded
    words): never use it as a path without sanitising it. ``content_id`` keeps
    its angle brackets (``<logo@example.com>``; HTML refers to it as
    ``cid:logo@example.com``). ``inline`` is true for a disposition ``inline``,
    or no disposition and a Content-ID. ``size`` is the decoded size in bytes.

    The decoded content is not kept: :meth:`content` decodes it from the
    message's encoded part on each call.
    """

    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    inline: bool
    _source: Callable[[], bytes] = field(repr=False, compare=False)

    def content(self) -> bytes:
        """Decode and return the attachment's bytes (a forwarded message: its raw form)."""
        return self._source()


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What :func:`parse_message` read from a message.

    Header values are decoded ``str``. ``message_id``, ``in_reply_to`` and the
    ``references`` keep their angle brackets (``<id@host>``), without the
    whitespace of folded lines; ``in_reply_to`` is the first id of its header.
    ``date`` is timezone-aware (UTC when the message said ``-0000``).
    ``text`` and ``html`` have ``\\n`` line ends. ``headers`` lists every
    top-level header in order. ``size`` is the size of the raw message in bytes.
    """

    from_: Mailbox | None
    to: tuple[Mailbox, ...]
    cc: tuple[Mailbox, ...]
    reply_to: tuple[Mailbox, ...]
    subject: str | None
    date: datetime | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]
    defects: tuple[str, ...]
    size: int

    def header(self, name: str) -> str | None:
        """The decoded value of the first header called ``name`` (any case), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse a raw RFC 5322 / MIME message; never raises, records problems in ``defects``."""
    data = bytes(raw)
    defects: list[str] = []
    try:
        return _parse(data, defects)
    except Exception as exc:  # a failure the fallbacks did not foresee: recorded, not raised
        defects.append(f"parser failure: {_describe_exception(exc)}")
        return _unreadable(data, defects)


# -- subjects ---------------------------------------------------------------------------

_REPLY_WORDS = frozenset({"re", "aw", "sv", "vs", "antw", "odp", "rif", "res"})
_FORWARD_WORDS = frozenset({"fwd", "fw", "wg", "tr", "vb", "enc", "rv"})
_PREFIX_WORDS = _REPLY_WORDS | _FORWARD_WORDS
_SUBJECT_PREFIX = re.compile(
    r"\s*(?:(?P<word>[a-z]+)\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]|(?P<tag>\[[^\[\]]*\]))\s*",
    re.IGNORECASE,
)


def _prefixes(subject: str) -> tuple[list[str], int]:
    """The leading reply/forward words and list tags of ``subject`` (``"[tag]"``), and their end."""
    found: list[str] = []
    position = 0
    while match := _SUBJECT_PREFIX.match(subject, position):
        word = (match.group("word") or "").lower()
        if match.group("tag") is None and word not in _PREFIX_WORDS:
            break
        found.append(word or "[tag]")
        position = match.end()
    return found, position


def normalize_subject(subject: str | None) -> str:
    """The subject without reply/forward prefixes and list tags, for thread matching.

    Strips, repeatedly, ``Re:``, ``Fwd:``, ``FW:``, ``AW:``, ``WG:``, ``SV:``,
    ``VS:``, ``Antw:`` and similar prefixes in any case, counted forms
    (``Re[2]:``, ``Re(2):``), and list tags (``[list-name]``) at the start;
    then collapses whitespace, applies NFC and case-folds.
    ``"Re: [team] FW: Hello   World"`` becomes ``"hello world"``.
    """
    if not subject:
        return ""
    _, end = _prefixes(subject)
    rest = " ".join(subject[end:].split())
    return unicodedata.normalize("NFC", rest).casefold()


def has_reply_prefix(subject: str | None) -> bool:
    """Whether ``subject`` starts (after list tags) with a reply prefix: ``Re:``, ``AW:``..."""
    words, _ = _prefixes(subject or "")
    first = next((word for word in words if word != "[tag]"), None)
    return first in _REPLY_WORDS


# -- the parse --------------------------------------------------------------------------

# The tree is parsed with compat32 semantics: policy.default's parser raises
# (IndexError...) on some malformed Content-Type headers, compat32's does not.
# Every header is then decoded on its own with policy.default's header registry.
_TREE_PARSER = BytesParser(policy=compat32)
_SINGLETONS = frozenset(
    {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "in-reply-to"}
    | {"references", "content-type", "content-transfer-encoding", "content-disposition"}
)
_REQUIRED = ("From", "Date", "Message-ID")


@dataclass(frozen=True, slots=True)
class _Field:
    """One header: its name, decoded value, and stdlib header object.

    ``parsed`` is None for plain unstructured text, and when the header could not be parsed.
    """

    name: str
    value: str
    parsed: BaseHeader | None


_Fields = dict[str, _Field]  # the first occurrence of each header, by lower-case name


def _parse(data: bytes, defects: list[str]) -> ParsedMessage:
    if not data.strip():
        defects.append("message is empty")
    root = _parse_tree(data, defects)
    budget = _Budget()
    fields = [_read_field(name, value, "", defects, budget) for name, value in root.raw_items()]
    first = _first_fields(fields, "", defects)
    defects.extend(f"{name}: header missing" for name in _REQUIRED if name.lower() not in first)
    text, html, attachments = _contents(root, first, defects, budget)
    boxes = {
        name: _mailboxes(first.get(name), defects) for name in ("from", "to", "cc", "reply-to")
    }
    date = _date(first.get("date"), defects)
    message_ids = _message_ids(_value(first, "message-id"), loose=True)
    replied = _message_ids(_value(first, "in-reply-to"), loose=False)
    return ParsedMessage(
        from_=next(iter(boxes["from"]), None),
        to=boxes["to"],
        cc=boxes["cc"],
        reply_to=boxes["reply-to"],
        subject=_value(first, "subject") if "subject" in first else None,
        date=date,
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=replied[0] if replied else None,
        references=tuple(dict.fromkeys(_message_ids(_value(first, "references"), loose=False))),
        text=text,
        html=html,
        attachments=attachments,
        headers=tuple((item.name, item.value) for item in fields),
        defects=_summary(defects),
        size=len(data),
    )


def _contents(
    root: Message, root_fields: _Fields, defects: list[str], budget: _Budget
) -> tuple[str | None, str | None, tuple[Attachment, ...]]:
    """The text body, the HTML body and the attachments of a parsed tree."""
    walk = _Walk(defects, budget)
    walk.run(root, root_fields)
    text_leaf, html_leaf = _pick_bodies(walk.leaves)
    text = None if text_leaf is None else _body_text(text_leaf, defects)
    html = None if html_leaf is None else _body_text(html_leaf, defects)
    attachments = tuple(
        _attachment(leaf, defects)
        for leaf in walk.leaves
        if leaf is not text_leaf and leaf is not html_leaf and not _is_alternative_body(leaf)
    )
    walk.record_part_defects()
    return text, html, attachments


def _summary(defects: list[str]) -> tuple[str, ...]:
    """The defects without repeats, at most :data:`MAX_DEFECTS` of them."""
    distinct = list(dict.fromkeys(_scrub(defect) for defect in defects))
    if len(distinct) <= MAX_DEFECTS:
        return tuple(distinct)
    kept = distinct[: MAX_DEFECTS - 1]
    return (*kept, f"... and {len(distinct) - len(kept)} more defects")


def _parse_tree(data: bytes, defects: list[str]) -> Message:
    """The MIME tree of ``data``; the header block alone when the structure defeats the parser."""
    try:
        return _TREE_PARSER.parsebytes(data)
    except Exception as exc:  # RecursionError on absurd nesting
        defects.append(f"MIME structure unreadable, body kept as text: {_describe_exception(exc)}")
        return BytesHeaderParser(policy=compat32).parsebytes(data)


def _unreadable(data: bytes, defects: list[str]) -> ParsedMessage:
    """The last resort: nothing but the size, and the body as Latin-1 text."""
    parts = re.split(rb"\r?\n\r?\n", data, maxsplit=1)
    body = parts[1] if len(parts) > 1 else data
    return ParsedMessage(
        from_=None,
        to=(),
        cc=(),
        reply_to=(),
        subject=None,
        date=None,
        message_id=None,
        in_reply_to=None,
        references=(),
        text=_scrub(body.decode("latin-1")),
        html=None,
        attachments=(),
        headers=(),
        defects=_summary(defects),
        size=len(data),
    )


# -- headers ----------------------------------------------------------------------------

_LINE_BREAKS = re.compile(r"\r|\n")
_PLAIN = re.compile(r"[\t\x20-\x7e]*")
# The headers policy.default parses into structures (email.headerregistry's
# default map); all others are unstructured text.
_STRUCTURED = frozenset(
    {"from", "sender", "to", "cc", "bcc", "reply-to", "date", "orig-date", "message-id"}
    | {"resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc", "resent-date"}
    | {"mime-version", "content-type", "content-disposition", "content-transfer-encoding"}
)
_ESCAPED_RUN = re.compile("[\udc80-\udcff]+")


def _decode_8bit(text: str) -> tuple[str, bool]:
    """Decode the raw 8-bit bytes the parser kept as surrogate escapes.

    Each run of such bytes is read as UTF-8 (RFC 6532), else as Latin-1.
    Returns the text and whether some run was not UTF-8.
    """
    not_utf8 = False

    def decode(match: re.Match[str]) -> str:
        nonlocal not_utf8
        octets = match.group().encode("ascii", "surrogateescape")
        try:
            return octets.decode("utf-8")
        except UnicodeDecodeError:
            not_utf8 = True
            return octets.decode("latin-1")

    return _ESCAPED_RUN.sub(decode, text), not_utf8


def _scrub(text: str) -> str:
    """``text`` as valid, storable Unicode: escaped 8-bit bytes decoded, other lone surrogates
    and NUL (which PostgreSQL text cannot hold) replaced by U+FFFD."""
    decoded, _ = _decode_8bit(text)
    return storable(decoded)


@dataclass(slots=True)
class _Budget:
    """What is left of :data:`MAX_HEADERS_CHARS` for one message."""

    left: int = MAX_HEADERS_CHARS


def _too_costly(text: str, budget: _Budget) -> str | None:
    """Why ``text`` must not go to the stdlib's structured parser, or None (then it is charged)."""
    if len(text) > MAX_HEADER_CHARS:
        return f"longer than {MAX_HEADER_CHARS} characters"
    if len(text) > budget.left:
        return f"past the {MAX_HEADERS_CHARS} characters of headers parsed in full"
    if comment_depth(text) > MAX_COMMENT_DEPTH:  # see MAX_COMMENT_DEPTH
        return f"comments nested more than {MAX_COMMENT_DEPTH} deep"
    budget.left -= len(text)
    return None


def _read_field(
    name: str, raw: str | Header, prefix: str, defects: list[str], budget: _Budget
) -> _Field:
    """Decode one header, recording what was wrong with it."""
    text, not_utf8 = _decode_8bit(_LINE_BREAKS.sub("", str(raw)))
    if name.lower() not in _STRUCTURED and "=?" not in text and _PLAIN.fullmatch(text):
        return _Field(name, text, None)  # nothing to decode or check: skip the costly parser
    if not_utf8:
        defects.append(f"{prefix}{name}: 8-bit bytes that are not UTF-8 (read as Latin-1)")
    costly = _too_costly(text, budget)
    if costly is not None:
        defects.append(f"{prefix}{name}: {costly}: decoded leniently")
        return _Field(name, _scrub(decode_words(text)), None)
    try:
        parsed: BaseHeader = default_policy.header_factory(name, text)
        value, problems = _header_value(parsed)
    except Exception as exc:  # the stdlib header parser has edge cases that raise
        defects.append(f"{prefix}{name}: unparsable header ({_describe_exception(exc)})")
        return _Field(name, _scrub(decode_words(text)), None)
    defects.extend(_describe_defect(f"{prefix}{name}", problem) for problem in problems)
    return _Field(name, _scrub(value), parsed)


def _header_value(parsed: BaseHeader) -> tuple[str, list[MessageDefect]]:
    """The decoded value of a header object and all its defects.

    An unstructured header (Subject...) keeps the defects of its encoded words
    in its parse tree, and its value is already forced to UTF-8 with U+FFFD;
    the tree's text still holds the undecodable bytes, which :func:`_scrub`
    reads as UTF-8, else Latin-1. Without the (private) tree: the public view.
    """
    problems = list(parsed.defects)
    known = {id(defect) for defect in problems}
    tree = getattr(parsed, "_parse_tree", None)
    for defect in getattr(tree, "all_defects", ()):
        if id(defect) not in known:  # once each (a quadratic search took seconds)
            known.add(id(defect))
            problems.append(defect)
    unstructured = isinstance(parsed, UnstructuredHeader) and tree is not None
    return (str(tree) if unstructured else str(parsed)), problems


def _first_fields(fields: list[_Field], prefix: str, defects: list[str]) -> _Fields:
    """The first occurrence of each header; repeats of single-use headers are defects."""
    first: _Fields = {}
    for item in fields:
        key = item.name.lower()
        if key not in first:
            first[key] = item
        elif key in _SINGLETONS:
            defects.append(f"{prefix}{item.name}: header repeated (the first one is used)")
    return first


def _value(fields: _Fields, name: str) -> str:
    item = fields.get(name)
    return "" if item is None else item.value


def _mailboxes(item: _Field | None, defects: list[str]) -> tuple[Mailbox, ...]:
    """The addresses of an address header, each checked (invalid ones kept, with a defect)."""
    if item is None:
        return ()
    pairs: list[tuple[str, str]]
    try:
        if isinstance(item.parsed, AddressHeader):
            pairs = [(a.display_name, a.addr_spec) for a in item.parsed.addresses]
        else:
            pairs = address_pairs(item.value)
    except Exception as exc:
        defects.append(f"{item.name}: unreadable addresses ({_describe_exception(exc)})")
        return ()
    if len(pairs) > MAX_MAILBOXES:
        defects.append(f"{item.name}: more than {MAX_MAILBOXES} addresses: the rest are left out")
        pairs = pairs[:MAX_MAILBOXES]
    boxes = []
    for name, address in pairs:
        box = Mailbox(_scrub(name).strip() or None, _scrub(address).strip())
        if box.address in ("", "<>"):
            continue
        if box.normalized() is None:
            defects.append(f"{item.name}: invalid address {box.address!r}")
        boxes.append(box)
    return tuple(boxes)


def _date(item: _Field | None, defects: list[str]) -> datetime | None:
    """The Date header as an aware datetime (UTC when its zone is unknown)."""
    if item is None:
        return None
    when: datetime | None = None
    if isinstance(item.parsed, DateHeader):
        when = item.parsed.datetime
    elif item.value.strip():
        try:
            when = parsedate_to_datetime(item.value)
        except Exception:
            defects.append(f"{item.name}: unreadable date {item.value!r}")
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


_BRACKETED = re.compile(r"<([^<>]*)>")


def _message_ids(value: str, *, loose: bool) -> list[str]:
    """The ``<id>`` tokens of a header, whitespace removed.

    Without angle brackets, tokens containing ``@`` are taken as ids (with
    ``loose``, the first token whatever it is: a Message-ID holds nothing else).
    """
    found = ["".join(inner.split()) for inner in _BRACKETED.findall(value)]
    if found:
        return [f"<{inner}>" for inner in found if inner]
    tokens = [token.strip("<>") for token in value.replace(",", " ").split()]
    if loose:
        return [f"<{token}>" for token in tokens[:1] if token]
    return [f"<{token}>" for token in tokens if "@" in token]


def _describe_defect(where: str, defect: Exception) -> str:
    detail = str(defect)[:200]
    kind = type(defect).__name__
    return f"{where}: {kind}: {detail}" if detail else f"{where}: {kind}"


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):  # its message depends on where the stack ran out
        return "RecursionError: nested too deeply"
    detail = str(exc)[:200]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


# -- the MIME tree ----------------------------------------------------------------------


@dataclass(slots=True)
class _Leaf:
    """A part that is not a container: a body candidate or an attachment."""

    part: Message
    fields: _Fields
    prefix: str
    content_type: str
    in_alternative: bool
    embedded: bool = False
    encoded_message: bool = False


@dataclass(slots=True)
class _Walk:
    """An iterative walk of the tree that collects the leaves and checks every part."""

    defects: list[str]
    budget: _Budget
    leaves: list[_Leaf] = field(default_factory=list)
    parts: list[tuple[str, Message]] = field(default_factory=list)

    def run(self, root: Message, root_fields: _Fields) -> None:
        # (part, path, depth, inside multipart/alternative, collect leaves)
        stack: list[tuple[Message, str, int, bool, bool]] = [(root, "", 0, False, True)]
        while stack:
            if len(self.parts) >= MAX_PARTS:
                self.defects.append(f"more than {MAX_PARTS} MIME parts: the rest are ignored")
                return
            part, path, depth, in_alternative, collect = stack.pop()
            prefix = f"part {path}: " if path else ""
            self.parts.append((prefix, part))
            fields = self._fields(part, prefix) if path else root_fields
            children = self._visit(part, fields, prefix, depth, in_alternative, collect)
            for index, child, child_alternative, child_collect in reversed(children):
                child_path = f"{path}.{index}" if path else str(index)
                stack.append((child, child_path, depth + 1, child_alternative, child_collect))

    def _fields(self, part: Message, prefix: str) -> _Fields:
        read = [
            _read_field(name, raw, prefix, self.defects, self.budget)
            for name, raw in part.raw_items()
        ]
        return _first_fields(read, prefix, self.defects)

    def _visit(
        self,
        part: Message,
        fields: _Fields,
        prefix: str,
        depth: int,
        in_alternative: bool,
        collect: bool,
    ) -> list[tuple[int, Message, bool, bool]]:
        """Record a leaf or return the children to walk: (index, part, in alternative, collect)."""
        content_type = _content_type(part)
        maintype = content_type.partition("/")[0]
        payload = _raw_payload(part)
        if not isinstance(payload, list):
            if collect:
                effective = "text/plain" if maintype == "multipart" else content_type
                self.leaves.append(_Leaf(part, fields, prefix, effective, in_alternative))
            return []
        embedded = maintype != "multipart"
        encoded = embedded and _cte(part) in ("base64", "quoted-printable")
        if collect and embedded:
            self.leaves.append(_Leaf(part, fields, prefix, content_type, False, True, encoded))
        if depth >= MAX_DEPTH:
            self.defects.append(f"{prefix}nested more than {MAX_DEPTH} levels: not read further")
            return []
        if encoded:
            self.defects.append(
                f"{prefix}{content_type} part with {_cte(part)} encoding "
                "(RFC 2046 allows none; decoded)"
            )
            payload = [_parse_tree(_encoded_message_content(part), self.defects)]
        alternative = in_alternative or content_type == "multipart/alternative"
        inner_collect = collect and not embedded
        return [
            (index, child, alternative, inner_collect)
            for index, child in enumerate(payload, start=1)
            if isinstance(child, Message)
        ]

    def record_part_defects(self) -> None:
        """The parser's defects of every part walked (boundaries, misplaced headers...)."""
        for prefix, part in self.parts:
            where = prefix.removesuffix(": ") or "message"
            self.defects.extend(_describe_defect(where, defect) for defect in part.defects)


def _raw_payload(part: Message) -> object:
    """The payload as parsed: a list of parts, or the encoded text with raw 8-bit bytes escaped.

    Read directly: ``get_payload()`` re-decodes 8-bit text with the declared
    charset and reads headers that may not parse.
    """
    return getattr(part, "_payload", None)


_MIME_TYPE = re.compile(r"[a-z0-9!#$%&'*+.^_`{|}~-]+/[a-z0-9!#$%&'*+.^_`{|}~-]+")


def _content_type(part: Message) -> str:
    """The part's type; an invalid one is text/plain (RFC 2045 section 5.2).

    For a part the parser read as a container, the type says which kind.
    """
    try:
        content_type = part.get_content_type()
    except Exception:
        content_type = "text/plain"
    if _MIME_TYPE.fullmatch(content_type):
        return content_type
    if isinstance(_raw_payload(part), list):
        return "multipart/mixed" if content_type.startswith("multipart/") else "message/rfc822"
    return "text/plain"


def _cte(part: Message) -> str:
    try:
        return str(part.get("content-transfer-encoding", "")).strip().lower()
    except Exception:
        return ""


def _param(fields: _Fields, header: str, name: str) -> str | None:
    """A parameter of a MIME header, as policy.default decodes it (RFC 2231, encoded words)."""
    item = fields.get(header)
    if item is None or not isinstance(item.parsed, ParameterizedMIMEHeader):
        return None
    value = item.parsed.params.get(name)
    return value if isinstance(value, str) else None


def _disposition(leaf: _Leaf) -> str | None:
    item = leaf.fields.get("content-disposition")
    if item is None:
        return None
    return item.value.partition(";")[0].strip().lower() or None


def _filename(leaf: _Leaf) -> str | None:
    """The declared filename, decoded; RFC 2231, quoted or bare encoded words, raw UTF-8."""
    name = _param(leaf.fields, "content-disposition", "filename") or _param(
        leaf.fields, "content-type", "name"
    )
    if not name:
        try:
            name = leaf.part.get_filename()
        except Exception:
            name = None
    if not name:
        return None
    if "=?" in name:
        name = decode_words(_decode_8bit(name)[0])
    return _scrub(name).strip() or None


def _content_id(leaf: _Leaf) -> str | None:
    ids = _message_ids(_value(leaf.fields, "content-id"), loose=True)
    return ids[0] if ids else None


def _is_body_candidate(leaf: _Leaf) -> bool:
    return (
        leaf.content_type in ("text/plain", "text/html")
        and not leaf.embedded
        and _disposition(leaf) != "attachment"
        and _filename(leaf) is None
    )


def _is_alternative_body(leaf: _Leaf) -> bool:
    """A body candidate inside multipart/alternative: another rendering of the body."""
    return leaf.in_alternative and _is_body_candidate(leaf)


def _pick_bodies(leaves: list[_Leaf]) -> tuple[_Leaf | None, _Leaf | None]:
    candidates = [leaf for leaf in leaves if _is_body_candidate(leaf)]

    def pick(content_type: str) -> _Leaf | None:
        matching = [leaf for leaf in candidates if leaf.content_type == content_type]
        preferred = [leaf for leaf in matching if leaf.in_alternative]
        return next(iter(preferred or matching), None)

    return pick("text/plain"), pick("text/html")


# -- content ----------------------------------------------------------------------------

_KNOWN_CTE = frozenset(
    {"", "7bit", "8bit", "binary", "base64", "quoted-printable"}
    | {"x-uuencode", "uuencode", "uue", "x-uue"}
)
_BAD_QP_ESCAPE = re.compile(r"=(?![0-9A-Fa-f]{2}|[ \t]*(?:\r\n|\n|\r|$))")
_HAS_ESCAPED = re.compile("[\udc80-\udcff]")


def _decode_payload(encoded: str, cte: str) -> tuple[bytes, list[MessageDefect]]:
    """Undo a transfer encoding; bad base64 is decoded as far as it goes, with its defects."""
    carrier = Message()  # decodes without touching the parsed part or its headers
    carrier["Content-Transfer-Encoding"] = cte
    carrier.set_payload(encoded)
    try:
        data = carrier.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        data = encoded.encode("utf-8", "surrogateescape")
    return data, list(carrier.defects)


def _leaf_content(encoded: str, cte: str) -> bytes:
    return _decode_payload(encoded, cte)[0]


def _decoded_leaf(leaf: _Leaf, defects: list[str]) -> tuple[bytes, Callable[[], bytes]]:
    """A leaf's decoded bytes and a loader for them, recording encoding problems."""
    payload = _raw_payload(leaf.part)
    encoded = payload if isinstance(payload, str) else ""
    cte = _cte(leaf.part)
    if cte not in _KNOWN_CTE:
        defects.append(f"{leaf.prefix}unknown Content-Transfer-Encoding {cte!r} (content as is)")
    elif cte == "quoted-printable" and _BAD_QP_ESCAPE.search(encoded):
        defects.append(f"{leaf.prefix}invalid quoted-printable escape (kept as is)")
    elif cte in ("", "7bit") and _HAS_ESCAPED.search(encoded):
        defects.append(f"{leaf.prefix}8-bit bytes in a part declared 7bit")
    data, problems = _decode_payload(encoded, cte)
    where = leaf.prefix.removesuffix(": ") or "message"
    defects.extend(_describe_defect(where, problem) for problem in problems)
    return data, partial(_leaf_content, encoded, cte)


def _body_text(leaf: _Leaf, defects: list[str]) -> str:
    """A text part decoded to ``str``, line ends as ``\\n``."""
    data, _ = _decoded_leaf(leaf, defects)
    try:
        charset = leaf.part.get_content_charset()
    except Exception:
        charset = None
    text, problem = _decode_text(data, charset)
    if problem:
        defects.append(f"{leaf.prefix}{problem}")
    if "\x00" in text:
        defects.append(f"{leaf.prefix}NUL characters in text (replaced by U+FFFD)")
    return _LINE_END.sub("\n", _scrub(text))


_LINE_END = re.compile(r"\r+\n")
"""A line end, with the stray CRs before it (``CR CR LF`` is a line end, not a CR and one)."""

# Labels whose strict codec rejects text its usual senders produce: use the superset.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso-8859-8",
}
_NOT_CHARSETS = frozenset({"unicode_escape", "raw_unicode_escape"})


def _text_codec(charset: str) -> str | None:
    """The Python codec for a charset label, or None if unknown or not a text encoding."""
    label = _SUPERSETS.get(charset, charset)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def _decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode ``data`` declared as ``charset``; returns the text and what went wrong, if anything.

    The declared charset (US-ASCII when none), then UTF-8, then Latin-1; a
    known multi-byte charset falls back to itself with U+FFFD instead. The
    text may hold lone surrogates (a UTF-16 body...): pass it through :func:`_scrub`.
    """
    declared = (charset or "us-ascii").strip().lower()
    codec = _text_codec(declared)
    if codec is None:
        problem = f"unknown charset {declared!r}"
    else:
        try:
            return data.decode(codec), None
        except Exception:  # UnicodeDecodeError, or a codec that fails on anything
            problem = f"text is not valid {declared!r}"
    try:
        return data.decode("utf-8"), f"{problem} (read as UTF-8)"
    except UnicodeDecodeError:
        pass
    if codec is not None and codec != "ascii":
        try:
            return data.decode(codec, "replace"), f"{problem} (bad bytes replaced)"
        except Exception:  # a codec without a replace mode
            pass
    return data.decode("latin-1"), f"{problem} (read as Latin-1)"


def _attachment(leaf: _Leaf, defects: list[str]) -> Attachment:
    """Describe a leaf as an attachment; its content is decoded once here, for its size."""
    if leaf.embedded:
        load = _encoded_message_content if leaf.encoded_message else _message_content
        source: Callable[[], bytes] = partial(load, leaf.part)
        size = len(source())
    else:
        data, source = _decoded_leaf(leaf, defects)
        size = len(data)
    content_id = _content_id(leaf)
    disposition = _disposition(leaf)
    return Attachment(
        filename=_filename(leaf),
        content_type=leaf.content_type,
        size=size,
        content_id=content_id,
        inline=disposition == "inline" or (disposition is None and content_id is not None),
        _source=source,
    )


_FLATTEN_POLICY = compat32.clone(linesep="\r\n", max_line_length=None)


def _flatten(message: Message) -> bytes:
    """A parsed message back to bytes, as close to its source as the stdlib allows."""
    buffer = BytesIO()
    try:
        BytesGenerator(buffer, mangle_from_=False, policy=_FLATTEN_POLICY).flatten(message)
    except Exception:  # a tree the generator cannot write: what it wrote so far
        pass
    return buffer.getvalue()


def _message_content(part: Message) -> bytes:
    """The raw form of an embedded message (or of each block of a message/* part)."""
    payload = _raw_payload(part)
    items = payload if isinstance(payload, list) else []
    return b"".join(_flatten(item) for item in items if isinstance(item, Message))


def _encoded_message_content(part: Message) -> bytes:
    """An embedded message sent base64 or quoted-printable encoded (against RFC 2046), decoded."""
    encoded = _message_content(part).decode("ascii", "surrogateescape")
    return _leaf_content(encoded, _cte(part))
