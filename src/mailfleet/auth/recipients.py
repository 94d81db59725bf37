"""Does a recipient's domain accept mail at all? (RFC 5321 5.1, RFC 7505.)

Asked before a send is queued, so mail to a domain that cannot receive never
reaches the relay and never counts as a bounce. A domain accepts mail when
it has MX records that are not a null MX, or, without any MX, an address
record (the implicit MX). A null MX (``0 .``), MX records that all name the
root (``10 .``), no MX and no address, or a name that does not exist
(NXDOMAIN) refuses; a null MX published beside real MX records (which
RFC 7505 forbids) is ignored: mail goes to the real ones. A lookup that fails
(SERVFAIL, timeout) says nothing: the send goes ahead and the relay decides.
Answers are cached for their TTL by the resolver, negative ones too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailfleet.model.errors import DnsError, DnsNameNotFound

if TYPE_CHECKING:
    from .dns import Resolver

__all__ = ["RecipientDomain", "check_recipient_domain"]


@dataclass(frozen=True, slots=True)
class RecipientDomain:
    """Whether ``domain`` accepts mail: True, False, or None when DNS could not tell."""

    domain: str
    accepts: bool | None
    reason: str


async def check_recipient_domain(resolver: Resolver, domain: str) -> RecipientDomain:
    """Whether mail to ``domain`` can be delivered at all, and why (never raises for DNS)."""
    try:
        exchanges = await resolver.mx(domain)
        if exchanges == [(0, "")]:
            return RecipientDomain(
                domain, False, f"{domain} does not accept mail (null MX, RFC 7505)"
            )
        if exchanges and all(host == "" for _, host in exchanges):
            # "10 ." is no null MX, but names no host either: nothing can be delivered.
            return RecipientDomain(
                domain, False, f"{domain} does not accept mail (its MX names no host, only '.')"
            )
        if exchanges:
            return RecipientDomain(domain, True, f"{domain} has MX records")
        if await resolver.addresses(domain):
            return RecipientDomain(domain, True, f"{domain} has an address (implicit MX)")
        return RecipientDomain(domain, False, f"{domain} has no MX and no address record")
    except DnsNameNotFound:
        return RecipientDomain(domain, False, f"{domain} does not exist (NXDOMAIN)")
    except DnsError as exc:
        return RecipientDomain(domain, None, f"{domain} could not be looked up: {exc}")
