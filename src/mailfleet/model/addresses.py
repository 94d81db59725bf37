"""Email addresses and domain names: validation and the normal form used as identity."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from .errors import InvalidAddress, InvalidInput

__all__ = ["Address", "normalize_domain", "parse_address"]


@dataclass(frozen=True, slots=True)
class Address:
    """A validated address in normal form: ``local@domain``, all lower case."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def parse_address(raw: str, *, field: str = "address") -> Address:
    """Validate ``raw`` (syntax only, no DNS) and return its normal form.

    Raises :class:`~mailfleet.InvalidAddress` naming ``field`` with the reason.
    """
    if not isinstance(raw, str):
        raise InvalidAddress(repr(raw), "an address must be a string", field=field)
    try:
        valid = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(raw, str(exc), field=field) from None
    return Address(valid.local_part.lower(), valid.ascii_domain.lower())


def normalize_domain(raw: str, *, field: str = "domain") -> str:
    """Validate a bare domain name and return it in lower-case ASCII form."""
    candidate = raw.strip().rstrip(".") if isinstance(raw, str) else ""
    if not candidate or "@" in candidate:
        raise InvalidInput(field, f"{raw!r} is not a domain name", value=raw)
    try:
        return parse_address(f"postmaster@{candidate}", field=field).domain
    except InvalidAddress:
        raise InvalidInput(field, f"{raw!r} is not a valid domain name", value=raw) from None
