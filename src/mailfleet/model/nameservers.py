"""Nameserver addresses as configured: ``host`` or ``host:port``, IPv6 in brackets.

The forms accepted (``dns_nameservers``):

- ``192.0.2.53`` and ``192.0.2.53:5353``: IPv4, port 53 unless given;
- ``2001:db8::53``: a bare IPv6 address (every colon belongs to it, so the
  port is 53), and ``[2001:db8::53]`` or ``[2001:db8::53]:5353``.

A host is an IP address, never a name: a resolver cannot look up the address
of the server it would look it up with. Every refusal is an
:class:`~mailfleet.model.errors.InvalidInput` whose message quotes the entry
and says what is wrong with it (an empty host, a port that is no number or
is out of range, a missing ``]``...).
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from .errors import InvalidInput

__all__ = ["DEFAULT_PORT", "Nameserver", "parse_nameserver"]

DEFAULT_PORT = 53
"""The DNS port, used when an entry names none."""

_FORMS = "expected 'host' or 'host:port', with an IP address as host ('[::1]:53' for IPv6)"


class Nameserver(NamedTuple):
    """One nameserver: its IP address (``host``, IPv6 without brackets) and ``port``."""

    host: str
    port: int = DEFAULT_PORT

    def __str__(self) -> str:
        """The entry's normal form: ``192.0.2.53:53``, ``[::1]:53``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_nameserver(entry: str, *, field: str = "dns_nameservers") -> Nameserver:
    """Read one nameserver entry (``host``, ``host:port``, ``[v6]:port``); surrounding
    spaces are ignored.

    Raises :class:`~mailfleet.model.errors.InvalidInput` (``field`` as given)
    for anything else.
    """
    if not isinstance(entry, str):
        raise InvalidInput(field, f"{entry!r} is not a string: {_FORMS}", value=entry)
    text = entry.strip()
    if not text:
        raise InvalidInput(field, f"an empty entry: {_FORMS}", value=entry)
    port_text: str | None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise InvalidInput(field, f"{text!r}: '[' without its ']' ({_FORMS})", value=entry)
        host, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidInput(
                field, f"{text!r}: {rest!r} after ']' (expected ':port' or nothing)", value=entry
            )
        port_text = rest[1:] if rest else None
        version = 6
    elif text.count(":") > 1:
        host, port_text, version = text, None, 6
    else:
        host, colon, after = text.partition(":")
        port_text = after if colon else None
        version = 4
    if not host:
        raise InvalidInput(field, f"{text!r}: the host is empty ({_FORMS})", value=entry)
    _check_address(host, version, text, field, entry)
    port = DEFAULT_PORT if port_text is None else _port(port_text, text, field, entry)
    return Nameserver(host, port)


def _check_address(host: str, version: int, text: str, field: str, entry: str) -> None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != version:
        what = "an IPv6 address" if version == 6 else "an IPv4 address"
        hint = " (a nameserver is given by its address)" if version == 4 else ""
        if version == 6 and text.startswith("[") and address is not None:
            what = "an IPv6 address (brackets are for IPv6 only)"
        subject = repr(text) if host == text else f"{text!r}: {host!r}"
        raise InvalidInput(field, f"{subject} is not {what}{hint}", value=entry)


def _port(port_text: str, text: str, field: str, entry: str) -> int:
    if not port_text:
        raise InvalidInput(field, f"{text!r}: the port after ':' is empty", value=entry)
    if not (port_text.isascii() and port_text.isdigit()):
        raise InvalidInput(field, f"{text!r}: the port {port_text!r} is not a number", value=entry)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise InvalidInput(
            field, f"{text!r}: the port {port} is out of range (1 to 65535)", value=entry
        )
    return port
