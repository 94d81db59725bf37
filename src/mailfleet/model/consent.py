"""Consent as values: unsubscribes, double opt-in, and the signed tokens of their links.

A token is 20 bytes written as 32 characters of lower-case base32 (``a-z``,
``2-7``): URL-safe, and safe in the local part of an address
(``unsubscribe+TOKEN@domain``), where receivers may change the case and
RFC 5321 allows 64 octets. It has two halves:

- ``key`` (8 bytes): what the store looks the token up by (it keeps only the
  key, never a whole token);
- ``tag`` (12 bytes): an HMAC-SHA256, under the application's secret, of
  what the token stands for: the purpose, the application, the grant, the
  recipient (and, for an opt-in, the request's nonce). It is recomputed from
  the stored row and compared in constant time (:func:`hmac.compare_digest`).

An unsubscribe token is derived, not drawn: its key and tag are both cut
from the one HMAC of (application, grant, recipient), so every bulk send of
a grant to a recipient carries the same link, computable before the send is
stored. An opt-in token's key is a random nonce, new for each request, so a
request that expired and was made again gets a new link.

Why not a token that carries its fields (application, grant and recipient
ids with a signature, as in a JWT): that takes more than 100 characters,
too long for the local part of the mailto address, whose case some
receivers also fold. The token binds the fields instead, and the store
holds them. Someone who reads the database sees the keys but no tags, so
cannot build a working link without the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from .errors import InvalidToken
from .outbound import SendResult

__all__ = [
    "KEY_BYTES",
    "OptIn",
    "OptInStatus",
    "Token",
    "UnsubscribeResult",
    "opt_in_token",
    "parse_token",
    "unsubscribe_token",
]

KEY_BYTES = 8
"""The bytes of a token the store indexes it by."""
_TAG_BYTES = 12
_TOKEN_CHARS = 32  # base32 of 20 bytes, no padding
_TOKEN = re.compile(r"[a-z2-7]{32}")


class OptInStatus(StrEnum):
    """Where a recipient stands with a grant's campaign mail."""

    NOT_REQUESTED = "not_requested"
    """No confirmation was ever asked for (or an unsubscribe withdrew it)."""
    PENDING = "pending"
    """A confirmation was sent and awaits its answer, until ``expires_at``."""
    CONFIRMED = "confirmed"
    """The recipient confirmed (``via`` the link or a reply): campaign mail may go."""
    EXPIRED = "expired"
    """A confirmation was sent and went unanswered past ``expires_at``."""


@dataclass(frozen=True, slots=True)
class UnsubscribeResult:
    """What ``Fleet.unsubscribe`` answers: who is unsubscribed from whom.

    Asking again answers the same (``unsubscribed_at`` and ``via`` are those of the
    first time). ``Fleet.unsubscribe_status`` answers it too, with ``unsubscribed_at``
    None while the recipient has not unsubscribed.
    """

    recipient: str
    grant_id: str
    sender: str
    """The grant's address: the one the recipient no longer hears from."""
    workspace_id: str
    """The workspace whose suppression list holds the recipient."""
    unsubscribed_at: datetime | None
    via: str | None
    """``one_click`` (the link's HTTPS POST) or ``mail`` (the mailto address)."""

    @property
    def unsubscribed(self) -> bool:
        """Whether the recipient is unsubscribed."""
        return self.unsubscribed_at is not None


@dataclass(frozen=True, slots=True)
class OptIn:
    """A recipient's double opt-in for one grant's campaign mail."""

    recipient: str
    grant_id: str
    sender: str
    """The grant's address."""
    status: OptInStatus
    requested_at: datetime | None
    expires_at: datetime | None
    """When a pending confirmation stops being accepted."""
    confirmed_at: datetime | None
    via: str | None
    """How it was confirmed: ``link`` or ``reply``."""
    confirmation: SendResult | None = None
    """``request_opt_in``: the answer to the confirmation mail it just sent (None when it
    sent none: confirmed already, or a confirmation is pending)."""

    @property
    def confirmed(self) -> bool:
        """Whether campaign mail may go to the recipient."""
        return self.status is OptInStatus.CONFIRMED


@dataclass(frozen=True, slots=True)
class Token:
    """A token's two halves (module docstring): ``key`` indexes it, ``tag`` proves it."""

    key: bytes
    tag: bytes

    @property
    def text(self) -> str:
        """The token as links and addresses carry it."""
        return base64.b32encode(self.key + self.tag).decode("ascii").lower()

    @property
    def key_hex(self) -> str:
        """The key as the store keeps it."""
        return self.key.hex()

    def matches(self, expected: Token) -> bool:
        """Whether this is ``expected``, compared in constant time."""
        return hmac.compare_digest(self.key + self.tag, expected.key + expected.tag)


def parse_token(text: object, kind: str) -> Token:
    """The halves of a token as given; :class:`~mailfleet.InvalidToken` if it is not one."""
    if not isinstance(text, str):
        raise InvalidToken(kind, "must be a string", value=text)
    normal = text.strip().lower()
    if not _TOKEN.fullmatch(normal):
        raise InvalidToken(
            kind,
            f"not a mailfleet token: {_TOKEN_CHARS} characters a-z and 2-7 expected",
            value=text,
        )
    try:
        raw = base64.b32decode(normal.upper())
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern admits only base32
        raise InvalidToken(kind, "not a mailfleet token", value=text) from None
    return Token(raw[:KEY_BYTES], raw[KEY_BYTES:])


def unsubscribe_token(secret: bytes, application_id: str, grant_id: str, address: str) -> Token:
    """The one unsubscribe token of ``address`` for mail from ``grant_id``."""
    full = _mac(secret, "unsubscribe", application_id, grant_id, address)
    return Token(full[:KEY_BYTES], full[KEY_BYTES : KEY_BYTES + _TAG_BYTES])


def opt_in_token(
    secret: bytes, application_id: str, grant_id: str, address: str, nonce: bytes
) -> Token:
    """The opt-in token of one confirmation request (``nonce``: its random key)."""
    if len(nonce) != KEY_BYTES:
        raise ValueError(f"an opt-in nonce has {KEY_BYTES} bytes")
    full = _mac(secret, "opt-in", application_id, grant_id, address, nonce.hex())
    return Token(nonce, full[:_TAG_BYTES])


def _mac(secret: bytes, purpose: str, *parts: str) -> bytes:
    message = "\0".join(("mailfleet", purpose, *parts)).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).digest()
