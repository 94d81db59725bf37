"""Standard Webhooks signing (https://www.standardwebhooks.com), pure.

A secret is ``whsec_`` followed by the base64 of 32 random bytes; the
signed content is ``"{webhook-id}.{webhook-timestamp}.{body}"`` and its
signature ``v1,<base64 of HMAC-SHA256 under the secret's bytes>``. Several
secrets valid at once (a rotation's grace period) give a space-separated
list of signatures in one ``webhook-signature`` header; a receiver accepts
the message when any of them verifies with a secret it knows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _random
from collections.abc import Sequence

from .errors import InvalidInput

__all__ = [
    "SECRET_BYTES",
    "SECRET_PREFIX",
    "TOLERANCE_SECONDS",
    "Signer",
    "new_secret",
    "secret_key",
    "sign",
    "signature_header",
    "verify",
    "webhook_headers",
]

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Random bytes in a new secret (the scheme asks for 24 to 64)."""
TOLERANCE_SECONDS = 300
"""How far a timestamp may be from the receiver's clock (the scheme's five minutes)."""


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret; :class:`~mailfleet.InvalidInput` for
    anything else (not base64, fewer than 24 bytes or more than 64)."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidInput("secret", f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("secret", "the part after whsec_ is not base64") from None
    if not 24 <= len(key) <= 64:
        raise InvalidInput("secret", f"a webhook secret holds 24 to 64 bytes, not {len(key)}")
    return key


def _content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode() + body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<signature>`` of one message under one secret."""
    digest = hmac.new(secret_key(secret), _content(msg_id, timestamp, body), hashlib.sha256)
    return "v1," + base64.b64encode(digest.digest()).decode()


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one ``v1,...`` per secret, space-separated."""
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def webhook_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` of one message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    msg_id: str,
    timestamp: str,
    body: bytes,
    header: str,
    *,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> bool:
    """Whether ``header`` (a ``webhook-signature`` value) holds a valid ``v1``
    signature of the message under ``secret``, and ``timestamp`` is within
    ``tolerance`` seconds of ``now``: what a receiver checks."""
    try:
        moment = int(timestamp)
    except ValueError:
        return False
    if abs(now - moment) > tolerance:
        return False
    expected = sign(secret, msg_id, moment, body).encode()
    return any(
        hmac.compare_digest(expected, candidate.encode())
        for candidate in header.split()
        if candidate.startswith("v1,")
    )


class Signer:
    """Signs many messages under a fixed set of secrets (the keys decoded once)."""

    __slots__ = ("_keys",)

    def __init__(self, secrets: Sequence[str]) -> None:
        self._keys = tuple(hmac.new(secret_key(s), digestmod=hashlib.sha256) for s in secrets)

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """The three Standard Webhooks headers of one message (see :func:`webhook_headers`)."""
        content = _content(msg_id, timestamp, body)
        signatures = []
        for key in self._keys:
            mac = key.copy()
            mac.update(content)
            signatures.append("v1," + base64.b64encode(mac.digest()).decode())
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }
