"""Email addresses and domain names: validation and the normal form used as identity."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import InvalidAddress, InvalidInput

__all__ = ["Address", "normalize_domain", "parse_address"]


@dataclass(frozen=True, slots=True)
class Address:
    """A validated address in normal form: ``local@domain``, all lower case."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


# RFC 5322 dot-atom of ASCII atext: the local part of nearly every real address.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def parse_address(raw: str, *, field: str = "address") -> Address:
    """Validate ``raw`` (syntax only, no DNS) and return its normal form.

    Raises :class:`~mailfleet.InvalidAddress` naming ``field`` with the reason.
    A plain ASCII local part takes a fast path that validates each distinct
    domain once; anything else goes through email-validator in full.
    """
    if not isinstance(raw, str):
        raise InvalidAddress(repr(raw), "an address must be a string", field=field)
    text = raw.strip()
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and len(text) <= 254 and _PLAIN_LOCAL.fullmatch(local):
        ascii_domain = _valid_domain(domain)
        if ascii_domain is not None:
            return Address(local.lower(), ascii_domain)
    from email_validator import EmailNotValidError, validate_email  # imported when first needed

    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(raw, str(exc), field=field) from None
    return Address(valid.local_part.lower(), valid.ascii_domain.lower())


@lru_cache(maxsize=4096)
def _valid_domain(domain: str) -> str | None:
    """The ASCII form of a valid mail domain, or None (let the full path explain)."""
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(f"x@{domain}", check_deliverability=False).ascii_domain.lower()
    except EmailNotValidError:
        return None


def normalize_domain(raw: str, *, field: str = "domain") -> str:
    """Validate a bare domain name and return it in lower-case ASCII form."""
    candidate = raw.strip().rstrip(".") if isinstance(raw, str) else ""
    if not candidate or "@" in candidate:
        raise InvalidInput(field, f"{raw!r} is not a domain name", value=raw)
    try:
        return parse_address(f"postmaster@{candidate}", field=field).domain
    except InvalidAddress:
        raise InvalidInput(field, f"{raw!r} is not a valid domain name", value=raw) from None
