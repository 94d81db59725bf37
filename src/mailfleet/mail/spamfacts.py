"""The header facts spam scoring needs, read from the fields read on arrival.

``header_facts`` takes the decoded fields of :func:`~mailfleet.mail.headers.parse_headers`
(no second read of the message) and never raises: a field it cannot make
sense of gives no fact rather than an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from email.utils import parseaddr

from ..model.spam import HeaderFacts
from .headers import MAX_COMMENT_DEPTH, address_pairs, comment_depth

__all__ = ["header_facts"]

_ADDRESS_IN_TEXT = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63})"
)


_COMPLEX = re.compile(r'[,"()\\;:]')
"""Address syntax the simple path leaves to ``email.utils.parseaddr``."""


def _mailbox(value: str) -> tuple[str, str]:
    """``(display name, address)`` of a From value: ``Name <a@b>`` and ``a@b`` read
    directly (most mail), anything else by the stdlib's parser."""
    if _COMPLEX.search(value) is None:
        start = value.find("<")
        if start < 0:
            return "", value.strip()
        end = value.rfind(">")
        if end > start:
            return value[:start].strip(), value[start + 1 : end].strip()
    if comment_depth(value) > MAX_COMMENT_DEPTH:  # the stdlib's parser would recurse
        return "", ""
    try:
        return parseaddr(value)
    except Exception:  # its edge cases that raise: no fact rather than an error
        return "", ""


def _domain(address: str) -> str | None:
    if "@" not in address:
        return None
    domain = address.rsplit("@", 1)[1].strip().strip(">").rstrip(".").lower()
    return domain or None


def header_facts(headers: Sequence[tuple[str, str]]) -> HeaderFacts:
    """Date and Message-ID present, the From domain, the domains an address in the From
    display name shows, and the Reply-To domains."""
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.lower(), value)
    display, address = _mailbox(first.get("from", ""))
    from_domain = _domain(address)
    shown = [m.lower() for m in _ADDRESS_IN_TEXT.findall(display)] if "@" in display else []
    replies = [
        domain
        for _, reply in address_pairs(first.get("reply-to", ""))
        if (domain := _domain(reply)) is not None
    ]
    return HeaderFacts(
        has_date=bool(first.get("date", "").strip()),
        has_message_id=bool(first.get("message-id", "").strip()),
        from_domain=from_domain,
        display_name_domains=tuple(dict.fromkeys(shown)),
        reply_to_domains=tuple(dict.fromkeys(replies)),
    )
