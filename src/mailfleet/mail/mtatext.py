"""Bounces in an MTA's own text: where the original starts, who failed, what was said.

Most MTAs and providers (Exim, qmail, Postfix's text, Exchange, Gmail,
Yahoo, Lotus Domino, GroupWise...) write a failure as prose: a few lines of
explanation, each failed address followed (or preceded, on its line) by the
receiver's answer, then a copy of the original. Rather than one parser per
vendor, this module reads that shape generically:

- :func:`split_original` cuts the text where the quoted original begins: at
  a marker line (:data:`ORIGINAL_MARKERS`, several languages), or at the
  first block of real header fields (Received, Message-ID, DKIM-Signature...);
- :func:`find_failed` lists the addresses of the report's own text, leaving
  out the excluded ones (the sender, the bounce's own recipient, VERP and
  service mailboxes), message IDs, URLs, and addresses said to be a sender;
  ``<x> (expanded from <alias>)`` reports the alias, as a DSN's
  Original-Recipient would;
- :func:`segments` gives each address the text from its line to the line of
  the next other address: that is where its answer is;
- :func:`diagnostic_of` picks the receiver's words out of a segment.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from .reasons import find_reply_code, joined_reply
from .reportaddr import ADDRESS, is_service, is_verp, normalise

__all__ = [
    "ORIGINAL_MARKERS",
    "diagnostic_of",
    "find_failed",
    "remote_mta_of",
    "reporting_mta_of",
    "segments",
    "split_original",
]

ORIGINAL_MARKERS = re.compile(
    r"^[ \t>*#=_|~+-]*(?:(?:this\s+is\s+)?(?:a\s+)?copy\s+of\s+(?:the"
    r"|your)\s+(?:original\s+)?message"
    r"|below\s+(?:this\s+line\s+)?is\s+a\s+copy\s+of|(?:original|returned|unsent|undelivered|rejected|"
    r"bounced|failed|forwarded)\s+(?:message|mail|e-?mail)\s*(?:follows|below|attached|text|headers?"
    r"|details|:|-{2,}|$)|message\s+headers?\s+follows?|(?:unsent|returned)\s+(?:message|mail)\s+"
    r"(?:below|follows)"
    r"|(?:the\s+)?(?:original|returned)\s+message\s+(?:follows|was\s+as\s+follows|is\s+(?:attached|"
    r"below|included))|original\s+message\s+headers|(?:the\s+)?headers?\s+of\s+(?:the\s+)?(?:original|"
    r"your)\s+message|(?:included|enclosed|attached)\s+is\s+a\s+copy\s+of\s+the\s+message"
    r"|[^\n]{0,30}?(?:lines|copy)\s+of\s+(?:your|the)\s+original\s+message|your\s+message\s+reads|message\s+text\s+follows|start\s+of\s+(?:returned|original|forwarded)\s+"
    r"message|ursprüngliche\s+nachricht|original-?nachricht|kopf\s+der\s+(?:original-?)?nachricht"
    r"|message\s+d['\u2019]origine|en-t[êe]tes?\s+(?:du\s+|de\s+)?message\s+d['\u2019]origine|mensaje\s+original"
    r"|encabezados\s+del\s+mensaje\s+original|messaggio\s+originale|intestazioni\s+originali"
    r"|oorspronkelijk\s+bericht|origineel\s+bericht|originele\s+berichtkoppen|mensagem\s+original"
    r"|исходное\s+сообщение|оригинальное\s+сообщение|原始邮件|原始郵件|元のメッセージ)",
    re.M,
)
"""Lines after which a bounce quotes the original message (matched in lower case)."""

_HEADER_LINE = re.compile(r"(?:>[ \t]?)?([A-Za-z][A-Za-z0-9-]{1,40}):(?:[ \t]|$)")
_REAL_HEADERS = frozenset(
    {
        "received",
        "return-path",
        "message-id",
        "dkim-signature",
        "mime-version",
        "content-type",
        "x-mailer",
        "delivered-to",
        "authentication-results",
        "arc-seal",
        "references",
        "in-reply-to",
        "content-transfer-encoding",
        "x-google-dkim-signature",
        "thread-index",
        "x-originating-ip",
        "x-ms-exchange-organization-authas",
        "user-agent",
    }
)
_NOT_ORIGINAL = frozenset(
    {
        "reporting-mta",
        "final-recipient",
        "original-recipient",
        "action",
        "status",
        "diagnostic-code",
        "remote-mta",
        "arrival-date",
        "last-attempt-date",
    }
)
_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.I)
_EXPANDED = re.compile(r"[>\s]*\(expanded\s+from:?\s*<?([^>)\s]+)>?\)", re.I)
_SENDER_BEFORE = re.compile(
    r"(?:(?<!generated\s)(?<!expanded\s)(?<!expanded\sfrom:\s)\bfrom|sender|return-path|reply-to|mailfrom|envelope-from|\bsent\s+by)\s*[:=]?\s*[<\"('\[]*\s*$",
    re.I,
)
_ID_BEFORE = re.compile(
    r"(?:message-?id|msg-?id|envelope-id|references|in-reply-to|queue-?id|\bid)\b[^\n]{0,20}$", re.I
)
_SUMMARY_LINE = re.compile(r"[ \t*-]*(?:to|cc|bcc|an|para|à)[ \t]*:", re.I)
_ID_LIKE = re.compile(r"[0-9A-Fa-f.$_=-]{16,}")
_ANCHOR = re.compile(
    r"(?:said|returned|response(?:\s+from\s+(?:the\s+)?remote\s+server)?(?:\s+was)?|reason|because"
    r"|the\s+error\s+(?:that\s+the\s+other\s+server\s+returned\s+)?was|error\s+message)\s*:",
    re.I,
)
_CODE = re.compile(r"(?<![\w.,:/@-])[45][0-5]\d(?=[ \t:\])-])")
_THREE_ALNUM = re.compile(r"(?:[^\W_][\W_]*){3}")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_SPACE = re.compile(r"\s+")
_REMOTE = re.compile(
    r"\bhost\s+([A-Za-z0-9][\w.-]*\.[A-Za-z]{2,})\.?\s*\[|remote[- ]mta:\s*(?:dns;\s*)?([\w.-]+)",
    re.I,
)
_REPORTING = re.compile(
    r"this\s+is\s+the\s+(?:mail\s+system|qmail-send\s+program)\s+at\s+(?:host\s+)?([\w.-]+\.[A-Za-z]{2,})",
    re.I,
)
MAX_DIAGNOSTIC = 1000
MAX_SEGMENT = 4000
MAX_HITS = 500


def _header_block_at(text: str) -> int | None:
    """Where the first block of real header fields begins in ``text``."""
    run_start = -1
    names: list[str] = []
    position = 0
    for line in text.splitlines(keepends=True):
        match = _HEADER_LINE.match(line)
        if match is not None:
            if run_start < 0:
                run_start, names = position, []
            names.append(match[1].lower())
        elif not (
            run_start >= 0 and line.lstrip(">")[:1] in (" ", "\t") and line.strip(" \t>\r\n")
        ):
            if _qualifies(names):
                return run_start
            run_start, names = -1, []
        position += len(line)
    return run_start if run_start >= 0 and _qualifies(names) else None


def _qualifies(names: list[str]) -> bool:
    return (
        len(names) >= 3
        and any(name in _REAL_HEADERS for name in names)
        and not any(name in _NOT_ORIGINAL for name in names)
    )


def split_original(text: str) -> tuple[str, str | None]:
    """The report's own text and the quoted original (None when it quotes none)."""
    cut: int | None = None
    after: int | None = None
    lowered = text.lower()
    if len(lowered) != len(text):  # a rare character lower-cases to two: keep positions
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    marker = ORIGINAL_MARKERS.search(lowered)
    if marker is not None:
        cut = marker.start()
        newline = text.find("\n", marker.end())
        after = len(text) if newline == -1 else newline + 1
    block = _header_block_at(text if cut is None else text[:cut])
    if block is not None:
        cut = after = block
    if cut is None or after is None:
        return text, None
    return text[:cut], text[after:]


def _in_answer(text: str, line_start: int, start: int) -> bool:
    """Whether an address is deep inside an SMTP answer on its line (a receiver's prose)."""
    code = _CODE.search(text, line_start, start)
    return code is not None and start - code.end() > 30


def find_failed(
    text: str, excluded: Collection[str], message_ids: Collection[str]
) -> list[tuple[int, int, str]]:
    """The candidate failed addresses in ``text``: ``(line start, start, address)``, in order.

    Addresses on a ``To:``/``Cc:`` line (a summary of the original's headers)
    count only when there is no other; a new address deep in an SMTP answer
    after one was found (``550 ... write to help@example.net``) is the
    receiver's prose, not a recipient.
    """
    urls = [match.span() for match in _URL.finditer(text)]
    hits: list[tuple[int, int, str]] = []
    summary: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    skip_to = -1
    for match in ADDRESS.finditer(text):
        start, end = match.span(1)
        if start < skip_to or any(a <= start < b for a, b in urls):
            continue
        address = normalise(match[1])
        expanded = _EXPANDED.match(text, end)
        if expanded is not None:
            alias = normalise(expanded[1])
            if alias is not None:
                address, skip_to = alias, expanded.end()
        if address is None or address in excluded or address in message_ids:
            continue
        if is_verp(address) or is_service(address) or address.startswith("abuse@"):
            continue
        local = address.rpartition("@")[0]
        if "$" in local or (_ID_LIKE.fullmatch(local) and sum(c.isdigit() for c in local) >= 8):
            continue
        line_start = max(text.rfind("\n", max(0, start - 1000), start) + 1, start - 1000)
        before = text[max(line_start, start - 80) : start]
        if _SENDER_BEFORE.search(before[-40:]) or _ID_BEFORE.search(before):
            continue
        if hits and address not in seen and _in_answer(text, line_start, start):
            continue
        if _SUMMARY_LINE.match(text, line_start):
            summary.append((line_start, start, address))
            continue
        hits.append((line_start, start, address))
        seen.add(address)
        if len(hits) >= MAX_HITS:
            break
    return hits or summary


def segments(text: str, hits: list[tuple[int, int, str]]) -> dict[str, str]:
    """Each address's own text: from its line to the line of the next other address."""
    cuts: list[tuple[int, str]] = []
    previous: str | None = None
    for line_start, start, address in hits:
        if address == previous:
            continue
        position = line_start if not cuts or line_start > cuts[-1][0] else start
        cuts.append((position, address))
        previous = address
    found: dict[str, list[str]] = {}
    for index, (position, address) in enumerate(cuts):
        end = cuts[index + 1][0] if index + 1 < len(cuts) else len(text)
        found.setdefault(address, []).append(text[position:end][:MAX_SEGMENT])
    return {address: "\n".join(parts)[:MAX_SEGMENT] for address, parts in found.items()}


def _paragraphs(text: str) -> list[str]:
    return [p for p in _PARAGRAPH.split(text) if p.strip()]


def _worded(text: str) -> bool:
    return _THREE_ALNUM.search(text) is not None


def diagnostic_of(
    segment: str, address: str | None = None, *, answered: bool = False
) -> str | None:
    """The receiver's words in a segment, whitespace collapsed, at most ~1000 characters.

    From the first SMTP reply code, else after an anchor (``said:``,
    ``The response was:``, ``because:``...), else the segment without its
    address; one paragraph (two when the first ends with a colon), the first
    that has words. With ``answered``, None unless a code or an anchor is found.
    """
    code = _CODE.search(segment)
    start = code.start() if code is not None else None
    if start is None:
        anchor = _ANCHOR.search(segment)
        if anchor is not None:
            start = anchor.end()
    if start is None and answered:
        return None
    body = segment[start:] if start is not None else segment
    if start is None and address:
        lowered = body.lower()
        at = lowered.find(address)
        while at != -1 and at < 300:
            body, lowered = body[at + len(address) :], lowered[at + len(address) :]
            at = lowered.find(address)
            if at != -1 and _worded(body[:at]):
                break
    paragraphs = _paragraphs(joined_reply(body))
    for index, paragraph in enumerate(paragraphs):
        text = paragraph
        if text.rstrip().endswith(":") and index + 1 < len(paragraphs):
            text = f"{text}\n{paragraphs[index + 1]}"
        text = _SPACE.sub(" ", text).strip().lstrip(":>-;,)]\"' ")
        if _worded(text):
            return text[:MAX_DIAGNOSTIC]
    if address and start is None:  # the words came before the address, on its line
        at = segment.lower().find(address)
        line = segment[segment.rfind("\n", 0, max(at, 0)) + 1 : max(at, 0)]
        text = _SPACE.sub(" ", line).strip().rstrip(":<\"'( ")
        if at != -1 and _worded(text):
            return text[:MAX_DIAGNOSTIC]
    return None


def reply_code_of(diagnostic: str | None) -> int | None:
    """The SMTP reply code that opens or is quoted in a diagnostic."""
    return find_reply_code(diagnostic) if diagnostic else None


def remote_mta_of(segment: str) -> str | None:
    """The receiving MTA a segment names (``host mx.example.com[...] said``), if any."""
    match = _REMOTE.search(segment)
    if match is None:
        return None
    return (match[1] or match[2]).lower().rstrip(".")


def reporting_mta_of(text: str) -> str | None:
    """The MTA a text bounce says it is (Postfix's and qmail's greeting), if any."""
    match = _REPORTING.search(text)
    return match[1].lower().rstrip(".") if match else None
