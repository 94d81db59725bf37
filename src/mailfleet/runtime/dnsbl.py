"""DNS blocklists: is the connecting IP, or the sender's domain, listed?

A DNSBL (RFC 5782) is a zone in which a listed IPv4 address ``a.b.c.d`` has
an A record at ``d.c.b.a.<zone>`` (an IPv6 address: its 32 nibbles reversed),
and a domain blocklist one at ``<domain>.<zone>``; the record is an address
in ``127.0.0.0/8`` (its last octet says why), NXDOMAIN means not listed.
Answers in ``127.255.255.0/24`` are the list's own error codes (a query from
an open resolver, over quota): logged, never counted as a listing.

Every query goes through the fleet's :class:`~mailfleet.auth.dns.Resolver`
(its nameservers, its cache, so a repeat sender costs nothing), all zones at
once, within ``dnsbl_timeout``: a list that does not answer in time, or
fails, counts as not listing the message.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

import anyio
from dns.rdtypes.IN.A import A

from ..auth.dns import Resolver
from ..model.errors import DnsError, DnsNameNotFound, InvalidInput
from ..model.spam import SpamInput, SpamSignal

__all__ = ["DnsblScorer", "reversed_name"]

log = logging.getLogger("mailfleet.spam")


def reversed_name(ip: str) -> str | None:
    """The DNSBL label sequence of an IP address (``192.0.2.1`` -> ``1.2.0.192``), or None
    when ``ip`` is not an address."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


class DnsblScorer:
    """The blocklist scorer: one signal ``dnsbl:<zone>`` per zone that lists the message."""

    name = "dnsbl"

    def __init__(
        self,
        resolver: Resolver,
        *,
        ip_zones: Sequence[str] = (),
        domain_zones: Sequence[str] = (),
        score: float = 4.0,
        timeout: float = 2.0,
    ) -> None:
        self._resolver = resolver
        self._ip_zones = tuple(ip_zones)
        self._domain_zones = tuple(domain_zones)
        self._score = score
        self._timeout = timeout

    @property
    def enabled(self) -> bool:
        """Whether any zone is configured."""
        return bool(self._ip_zones or self._domain_zones)

    async def score(self, message: SpamInput) -> list[SpamSignal]:
        """Ask every zone about the message's IP (and From domain); the listings found."""
        questions: list[tuple[str, str, str]] = []  # (zone, what, name asked)
        reversed_ip = reversed_name(message.peer) if message.peer else None
        if reversed_ip is not None:
            questions.extend(
                (zone, message.peer or "", f"{reversed_ip}.{zone}") for zone in self._ip_zones
            )
        domain = message.facts.from_domain if message.facts is not None else None
        if domain:
            questions.extend((zone, domain, f"{domain}.{zone}") for zone in self._domain_zones)
        found: list[SpamSignal] = []

        async def ask(zone: str, what: str, name: str) -> None:
            listed = await self._listed(name)
            if listed is not None:
                found.append(
                    SpamSignal(
                        f"dnsbl:{zone}", self._score, f"{what} is listed by {zone} ({listed})"
                    )
                )

        with anyio.move_on_after(self._timeout):
            async with anyio.create_task_group() as tg:
                for zone, what, name in questions:
                    tg.start_soon(ask, zone, what, name)
        order = {f"dnsbl:{zone}": i for i, (zone, _, _) in enumerate(questions)}
        return sorted(found, key=lambda signal: order.get(signal.name, 0))

    async def _listed(self, name: str) -> str | None:
        """The listing's answer (``127.0.0.2``), or None when ``name`` is not listed."""
        try:
            records = await self._resolver.query(name, "A")
        except DnsNameNotFound:
            return None
        except (DnsError, InvalidInput) as exc:
            log.debug("blocklist lookup of %s failed: %s", name, exc)
            return None
        answers = [r.address for r in records if isinstance(r, A)]
        listings = [a for a in answers if a.startswith("127.") and not a.startswith("127.255.255.")]
        if not listings and answers:
            log.warning("blocklist answer for %s is not a listing: %s", name, ", ".join(answers))
        return listings[0] if listings else None
