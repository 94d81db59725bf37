"""Why a recipient failed: :func:`classify_failure` turns a receiver's answer into a reason.

The answer (enhanced status code, SMTP reply code, the receiver's words) is
read in four passes, the most specific first:

1. :data:`TEXT_PATTERNS`: phrases receivers use, in priority order (a virus or
   a relay refusal before a sender-side or blocklist rejection, those before
   an unknown user, and so on down to generic policy words);
2. the enhanced status code (RFC 3463, :data:`STATUS_REASONS`); a generic
   ``x.0.0`` lets a more specific code quoted in the text speak instead;
3. :data:`WEAK_PATTERNS`: vague phrases (``mailbox unavailable``,
   ``recipient rejected``) only worth something when no code says more;
4. the SMTP reply code (:data:`REPLY_REASONS`).

Addresses and host names are masked before the phrases are matched, so a
recipient ``spam@example.com`` or a server ``virus-scan.example.net`` says
nothing. The class: ``user_unknown``, ``host_unknown`` and ``has_moved`` are
hard unless the failure is temporary (a 4.x.x status, else a 4xx reply);
``unknown`` is hard when it is permanent (5.x.x, else 5xx); every other
reason is soft. The tables are data, in :mod:`.reason_tables`.
"""

from __future__ import annotations

import re

from .reason_tables import REPLY_REASONS, STATUS_REASONS, TEXT_PATTERNS, WEAK_PATTERNS
from .reportaddr import ADDRESS
from .reports import BounceClass, BounceReason

__all__ = [
    "REPLY_REASONS",
    "STATUS_REASONS",
    "TEXT_PATTERNS",
    "WEAK_PATTERNS",
    "classify_failure",
    "classify_first",
    "find_reply_code",
    "find_status",
    "joined_reply",
    "text_reason",
]

R = BounceReason
_HARD = frozenset({R.USER_UNKNOWN, R.HOST_UNKNOWN, R.HAS_MOVED})
_COMPILED = tuple(
    (reason, re.compile(p), c, tuple(keys.split()) if keys else None)
    for reason, p, c, keys in TEXT_PATTERNS
)
_WEAK = tuple((reason, re.compile(p)) for reason, p in WEAK_PATTERNS)
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
_REPLY = re.compile(
    r"(?<![\w.,:/@-])([245][0-5]\d)(?=[ \t:\])-]|$)(?![ \t]*(?:bytes|kb|mb|days|hours))",
    re.M | re.I,
)
_LEADING = re.compile(r"(?<![\w.,:/@-])([245][0-5]\d)[ -](?:([245]\.\d{1,3}\.\d{1,3})\s)?")
_HOST = re.compile(r"(?<![\w.-])(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,6}(?![\w-])")
MAX_TEXT = 2000
"""Characters of a text the phrases are looked for in (a receiver's answer is short)."""


def find_status(text: str, *, failures_only: bool = True) -> str | None:
    """The first enhanced status code in ``text``, normalised (``5.1.1``).

    With ``failures_only`` a ``2.x.x`` code is skipped.
    """
    for match in _STATUS.finditer(text):
        if failures_only and match[1] == "2":
            continue
        return f"{match[1]}.{int(match[2])}.{int(match[3])}"
    return None


def find_reply_code(text: str) -> int | None:
    """The first 4xx or 5xx SMTP reply code in ``text``."""
    for match in _REPLY.finditer(text):
        if match[1][0] != "2":
            return int(match[1])
    return None


def _status_reason(status: str) -> BounceReason | None:
    _, subject, detail = status.split(".")
    for key in (status, f"x.{subject}.{detail}", f"x.{subject}"):
        reason = STATUS_REASONS.get(key)
        if reason is not None:
            if key == f"x.{subject}" and detail == "0" and subject in ("1", "5"):
                return None
            return reason
    return None


def joined_reply(text: str) -> str:
    """A multi-line SMTP answer as one: ``550-5.1.1 a 550-5.1.1 b`` -> ``550-5.1.1 a b``.

    The code (and enhanced code) repeated at the start of each line is dropped
    after its first occurrence, so the receiver's words read as one sentence.
    """
    first = _LEADING.search(text)
    if first is None:
        return text
    again = re.compile(
        rf"(?<=\s){first[1]}[ -](?:{re.escape(first[2])}\s+)?"
        if first[2]
        else rf"(?<=\s){first[1]}[ -]"
    )
    return text[: first.end()] + again.sub("", text[first.end() :])


def _masked(text: str) -> str:
    """``text`` without addresses and host names (their words say nothing)."""
    masked = ADDRESS.sub("<address>", joined_reply(text[:MAX_TEXT])) if "@" in text else text
    return _HOST.sub("<host>", masked[:MAX_TEXT]).lower()


def _strong(masked: str, status: str | None, reply_code: int | None) -> BounceReason | None:
    deferral = (status or "").startswith("4.7") or reply_code == 421
    for reason, pattern, only_deferral, keys in _COMPILED:
        if only_deferral and not deferral:
            continue
        if keys is not None:
            for key in keys:
                if key in masked:
                    break
            else:
                continue  # none of the words any match would contain
        if pattern.search(masked):
            return reason
    return None


def text_reason(
    text: str, status: str | None = None, reply_code: int | None = None
) -> BounceReason | None:
    """The reason the receiver's phrases give (pass 1), or None."""
    return _strong(_masked(text), status, reply_code)


def classify_failure(
    status: str | None, reply_code: int | None, text: str
) -> tuple[BounceReason, BounceClass]:
    """Why a recipient failed and whether that is permanent for the address.

    ``status`` is the enhanced status code (``"5.1.1"``), ``reply_code`` the
    SMTP reply code (``550``), ``text`` the receiver's words (a Diagnostic-Code,
    an SMTP answer, a bounce's text); any of them may be missing (the codes are
    then looked for in the text). The phrases are read first, then the status
    code, then vague phrases, then the reply code; see the module
    documentation for the tables and the class rule.
    """
    return classify_first(status, reply_code, [text or ""])


def classify_first(
    status: str | None, reply_code: int | None, texts: list[str]
) -> tuple[BounceReason, BounceClass]:
    """:func:`classify_failure` with the phrases of the first of ``texts`` that has any.

    For a report: the Diagnostic-Code, then the recipient's part of the report's
    text, then the whole report. Codes and vague phrases come from the first text.
    """
    texts = [text for text in texts if text] or [""]
    first = texts[0]
    if status is None:
        status = find_status(first)
    if reply_code is None:
        reply_code = find_reply_code(first)
    first_masked = ""
    reason = None
    for index, text in enumerate(texts):
        masked = _masked(text)
        if index == 0:
            first_masked = masked
        reason = _strong(masked, status, reply_code)
        if reason is not None:
            break
    if reason is None and status is not None and status.count(".") == 2:
        reason = _status_reason(status)
        if reason is None:
            quoted = find_status(first)
            if quoted is not None and quoted[0] == status[0]:
                reason = _status_reason(quoted)
    if reason is None:
        reason = next((r for r, pattern in _WEAK if pattern.search(first_masked)), None)
    if reason is None and reply_code is not None:
        reason = REPLY_REASONS.get(reply_code)
    if reason is None:
        reason = R.UNKNOWN
    if status and status[0] in "45":
        permanent, temporary = status[0] == "5", status[0] == "4"
    else:
        permanent = reply_code is not None and reply_code >= 500
        temporary = reply_code is not None and 400 <= reply_code < 500
    if reason in _HARD:
        hard = not temporary
    else:
        hard = reason is R.UNKNOWN and permanent
    return reason, BounceClass.HARD if hard else BounceClass.SOFT
