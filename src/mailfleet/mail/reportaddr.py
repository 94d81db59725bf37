"""Addresses in delivery reports: finding and normalising them, the VERP token.

A failed recipient is written many ways (``<user@example.com>``,
``rfc822;user@example.com``, ``"user@example.com"``, RFC 6533 ``\\x{..}``
escapes): :func:`normalise` reduces each to a bare lower-case address.
:func:`find_verp_token` finds ``TOKEN`` in ``bounces+TOKEN@domain``, and
:func:`is_service` tells the mailboxes of mail systems themselves
(``postmaster``, ``mailer-daemon``...), which are never a failed recipient.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .headers import address_pairs

__all__ = [
    "ADDRESS",
    "addresses_in",
    "find_verp_token",
    "is_service",
    "is_verp",
    "normalise",
]

_LOCAL_CHARS = r"[\w!#$%&'*+/=?^`{|}~-]"
ADDRESS = re.compile(
    rf"(?<![\w.!#$%&'*+/=?^`{{|}}~-])({_LOCAL_CHARS}+(?:\.{_LOCAL_CHARS}+)*"
    r"@(?:\[(?:IPv6:)?[0-9A-Fa-f.:]+\]|(?:[^\W_](?:[\w-]*[^\W_])?\.)+"
    r"(?:[^\W\d_]{2,63}|xn--[\w-]{2,59})))(?![\w-])"
)
"""An address in free text (``group(1)``); the top-level domain must be letters."""

_COMPLEX = re.compile(r'[,"()\\;]|@[^@]*@')
_TYPED = re.compile(r"^\s*[A-Za-z][\w-]{0,20}\s*;\s*")
_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_KEY_PREFIX = re.compile(
    r"^(?:smtp\.)?(?:mailfrom|rcpt|to|from|orcpt|envelope-from|sender|recipient|email|address|smtp)=",
    re.I,
)
_VERP = re.compile(r"bounces\+([A-Za-z0-9._=-]+)@", re.I)
_SERVICE = re.compile(
    r"(?:post[-_.]?master|mailer[-_.]?daemon|mail[-_.]?daemon|mdaemon|double-bounce|hostmaster"
    r"|mail[-_.]?delivery[-_.]?(?:system|subsystem)?|microsoftexchange[0-9a-f]{16,}"
    r"|bounces?)$",
    re.I,
)


def _unescape(match: re.Match[str]) -> str:
    code = int(match[1], 16)
    return chr(code) if code < 0x110000 else ""


def normalise(value: str) -> str | None:
    """The bare lower-case address in ``value``, or None when there is none.

    Strips an address type (``rfc822;``), angle brackets, quotes and a
    display name; decodes RFC 6533 ``\\x{HH}`` escapes.
    """
    text = value.strip()
    if ";" in text:
        text = _TYPED.sub("", text, count=1)
    if "\\x{" in text:
        text = _ESCAPE.sub(_unescape, text)
    match = ADDRESS.search(text)
    if match is not None:
        address = match[1]
    else:
        address = text.strip(" \t<>\"'`()[],;:.")
        if "@" not in address or any(c.isspace() for c in address):
            return None
    address = address.strip("'`").rstrip(".")
    if "=" in address:
        address = _KEY_PREFIX.sub("", address, count=1)
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        return None
    return address.lower()


def addresses_in(values: Iterable[str]) -> list[str]:
    """The normalised addresses of address-list header values, in order, once each."""
    found: list[str] = []
    for value in values:
        if not _COMPLEX.search(value):  # one plain address, bracketed or not: no parser needed
            address = normalise(value)
            if address and address not in found:
                found.append(address)
            continue
        for _, raw in address_pairs(value) or [("", value)]:
            address = normalise(raw) if raw else None
            if address and address not in found:
                found.append(address)
    return found


def is_verp(address: str) -> bool:
    """Whether ``address`` is a VERP bounce address (``bounces+TOKEN@...``)."""
    return _VERP.search(address) is not None


def is_service(address: str) -> bool:
    """Whether ``address`` is a mail system's own mailbox (postmaster, mailer-daemon...)."""
    return _SERVICE.match(address.rpartition("@")[0]) is not None


def find_verp_token(texts: Iterable[str | None]) -> str | None:
    """``TOKEN`` of the first ``bounces+TOKEN@domain`` in ``texts``, searched in order."""
    for text in texts:
        if text and "+" in text:
            match = _VERP.search(text)
            if match is not None:
                return match[1]
    return None
