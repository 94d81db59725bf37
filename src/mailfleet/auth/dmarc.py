"""DMARC (RFC 7489): the policy record, where it is found, and identifier alignment.

A domain publishes its policy as a TXT record at ``_dmarc.<domain>``
(:func:`parse_dmarc` reads one). A receiver looks for the record of the
message's From domain first and, when there is none, for the record of its
organizational domain (:func:`organizational_domain`: the registered name
below the public suffix, from the Public Suffix List); :func:`lookup_dmarc`
does both and says where the policy came from. :func:`aligned` compares two
domains the way DMARC does: equal (strict) or sharing their organizational
domain (relaxed).

Records that do not start with ``v=DMARC1`` are not DMARC records and are
skipped; two DMARC records at one name are an error and then no policy
applies (RFC 7489 6.6.3). Tags DMARC does not define are ignored, as the RFC
says. DNS failures other than a missing name propagate as
:class:`~mailfleet.model.errors.DnsError`: a lookup that could not be made
is told apart from a record that is absent or wrong.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from mailfleet.model.addresses import normalize_domain

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

    from .dns import Resolver

__all__ = [
    "Alignment",
    "DmarcError",
    "DmarcLookup",
    "DmarcPolicy",
    "DmarcRecord",
    "aligned",
    "lookup_dmarc",
    "organizational_domain",
    "parse_dmarc",
]

DmarcPolicy = Literal["none", "quarantine", "reject"]
"""What the domain owner asks receivers to do with mail that fails DMARC."""

Alignment = Literal["r", "s"]
"""Identifier alignment: relaxed (same organizational domain) or strict (same domain)."""

_POLICIES: tuple[DmarcPolicy, ...] = ("none", "quarantine", "reject")
_VERSION = re.compile(r"\s*v\s*=\s*DMARC1\s*(;|$)")
_REPORT_FORMATS = {"afrf", "iodef"}


class DmarcError(ValueError):
    """A DMARC record that cannot be used; the message says which tag and why."""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed DMARC policy record (RFC 7489 6.3), defaults filled in."""

    policy: DmarcPolicy
    """``p=``: for the domain itself."""
    subdomain_policy: DmarcPolicy
    """``sp=``: for its subdomains (``p=`` when absent)."""
    adkim: Alignment = "r"
    aspf: Alignment = "r"
    pct: int = 100
    """``pct=``: the percentage of failing mail the policy applies to."""
    rua: tuple[str, ...] = ()
    """Where aggregate reports go (``mailto:`` URIs)."""
    ruf: tuple[str, ...] = ()
    """Where failure reports go."""
    text: str = ""
    """The record as published."""

    def policy_for(self, from_domain: str, record_domain: str) -> DmarcPolicy:
        """The policy for mail from ``from_domain`` under a record found for
        ``record_domain``: ``sp=`` when the record is the organizational
        domain's and ``from_domain`` is a subdomain of it, else ``p=``."""
        if normalize_domain(from_domain) == normalize_domain(record_domain):
            return self.policy
        return self.subdomain_policy


def parse_dmarc(text: str) -> DmarcRecord:
    """Parse a DMARC record; :class:`DmarcError` when it is not a valid one.

    The record must start with ``v=DMARC1`` and carry a ``p=`` of ``none``,
    ``quarantine`` or ``reject``; ``sp=``, ``adkim=``, ``aspf=``, ``pct=``,
    ``rua=``, ``ruf=``, ``rf=``, ``ri=`` and ``fo=`` are checked when present.
    """
    if not _VERSION.match(text):
        raise DmarcError("a DMARC record starts with v=DMARC1")
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if not sep or not name:
            raise DmarcError(f"{part.strip()!r} is not a tag=value pair")
        if name in tags:
            raise DmarcError(f"the tag {name}= appears twice")
        tags[name] = value
    if "p" not in tags:
        raise DmarcError("the p= tag (the policy) is missing; it must follow v=DMARC1")
    policy = _policy(tags["p"], "p")
    subdomain = _policy(tags["sp"], "sp") if "sp" in tags else policy
    _check_report_tags(tags)
    return DmarcRecord(
        policy=policy,
        subdomain_policy=subdomain,
        adkim=_alignment(tags.get("adkim", "r"), "adkim"),
        aspf=_alignment(tags.get("aspf", "r"), "aspf"),
        pct=_percent(tags.get("pct", "100")),
        rua=_uris(tags.get("rua", ""), "rua"),
        ruf=_uris(tags.get("ruf", ""), "ruf"),
        text=text,
    )


@dataclass(frozen=True, slots=True)
class DmarcLookup:
    """What a receiver finds for mail from ``domain``.

    ``record_domain`` is where the records were looked up last: ``domain``
    itself, or its organizational domain when ``domain`` has none. ``record``
    is the policy when exactly one valid record is there; otherwise
    ``problem`` says what is wrong (none, two, malformed) and no policy
    applies.
    """

    domain: str
    record_domain: str
    records: tuple[str, ...]
    record: DmarcRecord | None
    problem: str | None

    @property
    def name(self) -> str:
        """The DNS name of the record: ``_dmarc.<record_domain>``."""
        return f"_dmarc.{self.record_domain}"

    @property
    def policy(self) -> DmarcPolicy | None:
        """The policy that applies to mail from :attr:`domain`, or None."""
        if self.record is None:
            return None
        return self.record.policy_for(self.domain, self.record_domain)


async def lookup_dmarc(resolver: Resolver, domain: str) -> DmarcLookup:
    """Find the DMARC policy for mail from ``domain`` (RFC 7489 6.6.3).

    Raises :class:`~mailfleet.model.errors.DnsError` when a lookup fails for
    another reason than the name not existing (SERVFAIL, timeout).
    """
    domain = normalize_domain(domain)
    found = await _records_at(resolver, domain)
    record_domain = domain
    org = organizational_domain(domain)
    if not found and org != domain:
        found = await _records_at(resolver, org)
        record_domain = org
    name = f"_dmarc.{record_domain}"
    if not found:
        return DmarcLookup(domain, record_domain, (), None, f"no DMARC record at {name}")
    if len(found) > 1:
        problem = f"{len(found)} DMARC records at {name}: with more than one, none applies"
        return DmarcLookup(domain, record_domain, tuple(found), None, problem)
    try:
        record = parse_dmarc(found[0])
    except DmarcError as exc:
        return DmarcLookup(domain, record_domain, tuple(found), None, f"{name}: {exc}")
    return DmarcLookup(domain, record_domain, tuple(found), record, None)


def organizational_domain(domain: str) -> str:
    """The registered domain of ``domain``: one label below its public suffix
    (``mail.example.co.uk`` -> ``example.co.uk``); ``domain`` itself when it
    is a public suffix or has no known one (``github.io``)."""
    name = normalize_domain(domain)
    private: str | None = _suffix_list().privatesuffix(name)
    return private or name


def aligned(first: str, second: str, mode: Alignment) -> bool:
    """Whether two domains are aligned: equal (``"s"``) or with one organizational domain."""
    a, b = normalize_domain(first), normalize_domain(second)
    if a == b:
        return True
    return mode == "r" and organizational_domain(a) == organizational_domain(b)


@functools.cache
def _suffix_list() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()  # the copy shipped with the package: no network


async def _records_at(resolver: Resolver, domain: str) -> list[str]:
    """The DMARC records (``v=DMARC1...``) at ``_dmarc.<domain>``; none when it does not exist."""
    texts = await resolver.txt(f"_dmarc.{domain}", missing_empty=True)
    return [text for text in texts if _VERSION.match(text)]


def _policy(value: str, tag: str) -> DmarcPolicy:
    lowered = value.lower()
    for policy in _POLICIES:
        if lowered == policy:
            return policy
    raise DmarcError(f"{tag}={value} is not a policy (none, quarantine or reject)")


def _alignment(value: str, tag: str) -> Alignment:
    lowered = value.lower()
    if lowered not in ("r", "s"):
        raise DmarcError(f"{tag}={value} is not an alignment mode (r or s)")
    return cast(Alignment, lowered)


def _percent(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 100:
        raise DmarcError(f"pct={value} is not a percentage (0 to 100)")
    return int(value)


def _uris(value: str, tag: str) -> tuple[str, ...]:
    uris = tuple(uri.strip() for uri in value.split(",") if uri.strip())
    for uri in uris:
        scheme, sep, rest = uri.partition(":")
        if not sep or not rest or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
            raise DmarcError(f"{tag}= holds {uri!r}, which is not a URI (mailto:...)")
    return uris


def _check_report_tags(tags: dict[str, str]) -> None:
    """Check ``rf=``, ``ri=`` and ``fo=``, which the record type does not keep."""
    if "ri" in tags and not tags["ri"].isdigit():
        raise DmarcError(f"ri={tags['ri']} is not a number of seconds")
    if "rf" in tags:
        formats = {part.strip().lower() for part in tags["rf"].split(":")}
        if not formats <= _REPORT_FORMATS:
            raise DmarcError(f"rf={tags['rf']} names an unknown report format (afrf)")
    if "fo" in tags:
        options = {part.strip().lower() for part in tags["fo"].split(":")}
        if not options <= {"0", "1", "d", "s"}:
            raise DmarcError(f"fo={tags['fo']} is not a failure option (0, 1, d, s)")
