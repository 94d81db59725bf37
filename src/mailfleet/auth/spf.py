"""SPF records (RFC 7208): their syntax, and what evaluating one will cost a receiver.

:func:`parse_spf` reads one ``v=spf1`` record by the grammar of RFC 7208
section 12 and says precisely what is wrong with a bad one.
:func:`analyse_spf` fetches the record of a domain and every record it
includes or redirects to, and counts what receivers count: the DNS-querying
terms (``include``, ``a``, ``mx``, ``ptr``, ``exists``, ``redirect``; at most 10
in all, nested records included) and the void lookups (at most 2). Whether
an address passes is :func:`mailfleet.auth.spfcheck.check_host`'s job.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailfleet.model.errors import DnsError, DnsNameNotFound

if TYPE_CHECKING:
    from .dns import Resolver

__all__ = [
    "LOOKUP_LIMIT",
    "VOID_LOOKUP_LIMIT",
    "SpfAnalysis",
    "SpfError",
    "SpfRecord",
    "SpfTerm",
    "analyse_spf",
    "is_spf",
    "parse_spf",
    "spf_value",
]

LOOKUP_LIMIT = 10
"""DNS-querying terms a receiver evaluates before answering permerror (RFC 7208 4.6.4)."""
VOID_LOOKUP_LIMIT = 2
"""Lookups answering no record a receiver tolerates (RFC 7208 4.6.4)."""

_QUERYING = frozenset({"include", "a", "mx", "ptr", "exists"})
_MECHANISMS = frozenset({"all", "ip4", "ip6", *_QUERYING})
_NEEDS_VALUE = frozenset({"include", "exists", "ip4", "ip6"})
_VERSION = re.compile(r"v=spf1(?:\s|$)", re.IGNORECASE)
_MODIFIER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_MACRO = re.compile(r"%(?:\{[slodiphcrtvSLODIPHCRTV][0-9]*[rR]?[.+,/_=-]*\}|[%_-])")
_MACRO_END = re.compile(r"(?:%\{[^}]*\}|%[%_-])\.?$")
_TOPLABEL = re.compile(r"(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_DEPTH_LIMIT = 10  # nested includes followed at most (a loop ends here too)


class SpfError(ValueError):
    """An SPF record that does not parse; the message says which term and why."""


@dataclass(frozen=True, slots=True)
class SpfTerm:
    """One term of a record: a mechanism (``-all``, ``ip4:192.0.2.0/24``...) or a modifier
    (``redirect=...``). ``qualifier`` is ``+``, ``-``, ``~`` or ``?`` for a
    mechanism, ``""`` for a modifier; ``value`` what follows ``:`` or ``=``."""

    name: str
    qualifier: str
    value: str | None
    text: str

    @property
    def is_modifier(self) -> bool:
        """Whether the term is a modifier (``name=value``)."""
        return self.qualifier == ""

    @property
    def queries_dns(self) -> bool:
        """Whether a receiver looks something up for it (it counts toward the 10)."""
        return self.name in _QUERYING if not self.is_modifier else self.name == "redirect"


@dataclass(frozen=True, slots=True)
class SpfRecord:
    """A parsed SPF record."""

    terms: tuple[SpfTerm, ...]
    text: str

    @property
    def mechanisms(self) -> tuple[SpfTerm, ...]:
        """The directives, in order."""
        return tuple(term for term in self.terms if not term.is_modifier)

    @property
    def all(self) -> SpfTerm | None:
        """The ``all`` mechanism (the record's last word on everyone else), if any."""
        return next((term for term in self.mechanisms if term.name == "all"), None)

    @property
    def redirect(self) -> str | None:
        """The ``redirect=`` target: the record to use instead when nothing matches."""
        return next((t.value for t in self.terms if t.is_modifier and t.name == "redirect"), None)

    @property
    def evaluated(self) -> tuple[SpfTerm, ...]:
        """The terms a receiver may evaluate: the mechanisms up to the first ``all`` (it
        always matches, so nothing after it is reached), then the ``redirect``, which
        counts only when there is no ``all`` (RFC 7208 6.1)."""
        terms: list[SpfTerm] = []
        for term in self.mechanisms:
            terms.append(term)
            if term.name == "all":
                return tuple(terms)
        redirect = next((t for t in self.terms if t.is_modifier and t.name == "redirect"), None)
        return (*terms, redirect) if redirect is not None else tuple(terms)


def is_spf(text: str) -> bool:
    """Whether a TXT record is an SPF record (starts with ``v=spf1``)."""
    return bool(_VERSION.match(text.strip()))


def parse_spf(text: str) -> SpfRecord:
    """Parse a ``v=spf1`` record; :class:`SpfError` says what is wrong with a bad one."""
    words = text.split()
    if not words or words[0].lower() != "v=spf1":
        raise SpfError("an SPF record starts with v=spf1")
    terms: list[SpfTerm] = []
    seen_modifiers: set[str] = set()
    for word in words[1:]:
        term = _term(word)
        if term.is_modifier and term.name in ("redirect", "exp"):
            if term.name in seen_modifiers:
                raise SpfError(f"{term.name}= appears twice (RFC 7208 6)")
            seen_modifiers.add(term.name)
        terms.append(term)
    return SpfRecord(tuple(terms), text)


def spf_value(relay_addresses: Sequence[str], include: str | None) -> str:
    """The SPF record authorising a relay: ``v=spf1 ip4:... include:... -all``.

    With neither addresses nor an include, the domain's MX hosts are
    authorised (``mx``), which is right when the fleet sends from its MX.
    """
    terms: list[str] = []
    for entry in relay_addresses:
        network = ipaddress.ip_network(entry, strict=False)
        text = str(network.network_address) if network.num_addresses == 1 else str(network)
        terms.append(f"ip{network.version}:{text}")
    if include:
        terms.append(f"include:{include}")
    if not terms:
        terms.append("mx")
    return "v=spf1 " + " ".join(terms) + " -all"


@dataclass(slots=True)
class SpfAnalysis:
    """What a receiver meets when it evaluates ``domain``'s SPF record.

    ``records`` are the ``v=spf1`` records at the domain (exactly one is
    valid); ``record`` the parsed one when there is exactly one and it
    parses, else ``error`` says why not. ``lookups`` counts the DNS-querying
    terms of the record and of every record it reaches (``reached``: the
    domains of its includes and redirects, nested); ``void_lookups`` the
    ones that found nothing. ``problems`` are errors in the nested records;
    ``dns_errors`` the lookups that could not be made. ``all_qualifier`` is
    the qualifier of the terminating ``all`` (``+``, ``-``, ``~``, ``?``),
    the redirect target's when the record ends in a ``redirect=``, or None
    when there is none.
    """

    domain: str
    records: tuple[str, ...] = ()
    record: SpfRecord | None = None
    error: str | None = None
    lookups: int = 0
    void_lookups: int = 0
    reached: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    dns_errors: list[DnsError] = field(default_factory=list)
    all_qualifier: str | None = None

    @property
    def count(self) -> int:
        """How many ``v=spf1`` records the domain publishes (exactly one is valid)."""
        return len(self.records)

    @property
    def redirect(self) -> str | None:
        """The record's ``redirect=`` target, if any."""
        return self.record.redirect if self.record is not None else None

    @property
    def valid(self) -> bool:
        """Whether a receiver can evaluate the record: one record, correct syntax, nested
        records usable, within the lookup and void-lookup limits (DNS failures aside)."""
        return (
            self.record is not None
            and self.error is None
            and not self.problems
            and self.lookups <= LOOKUP_LIMIT
            and self.void_lookups <= VOID_LOOKUP_LIMIT
        )


async def analyse_spf(resolver: Resolver, domain: str) -> SpfAnalysis:
    """Fetch and analyse ``domain``'s SPF record and the records it reaches.

    Raises :class:`~mailfleet.model.errors.DnsError` only for the domain's
    own record; failures further down are recorded in the analysis.
    """
    found = await _spf_records(resolver, domain)
    analysis = SpfAnalysis(domain, tuple(found))
    if len(found) != 1:
        analysis.error = (
            f"no SPF record at {domain}"
            if not found
            else f"{len(found)} SPF records at {domain}: receivers answer permerror"
        )
        return analysis
    try:
        analysis.record = parse_spf(found[0])
    except SpfError as exc:
        analysis.error = str(exc)
        return analysis
    every = analysis.record.all
    analysis.all_qualifier = every.qualifier if every is not None else None
    await _walk(resolver, analysis, analysis.record, domain, depth=0, terminal=True)
    return analysis


async def _spf_records(resolver: Resolver, domain: str) -> list[str]:
    """The ``v=spf1`` records at ``domain``; none when the name does not exist."""
    return [text for text in await resolver.txt(domain, missing_empty=True) if is_spf(text)]


async def _walk(
    resolver: Resolver,
    analysis: SpfAnalysis,
    record: SpfRecord,
    domain: str,
    *,
    depth: int,
    terminal: bool,
) -> None:
    """Count ``record``'s querying terms and follow its includes and redirect.

    ``terminal``: the record is the domain's own or one it redirects to (not
    an included one), so its ``all`` is the domain's last word.
    """
    for term in record.evaluated:
        if not term.queries_dns:
            continue
        analysis.lookups += 1
        if analysis.lookups > LOOKUP_LIMIT * 2 or depth >= _DEPTH_LIMIT:
            return  # far past the limit (or a loop): the count already fails
        target = (term.value or "").split("/", 1)[0] or domain
        if "%" in target:
            continue  # a macro: what it names is known only per message
        if term.name in ("include", "redirect"):
            redirect = term.name == "redirect"
            await _follow(
                resolver, analysis, term.name, target, depth=depth, terminal=terminal and redirect
            )
        elif term.name in ("a", "mx", "exists"):
            await _count_void(resolver, analysis, term.name, target)


async def _follow(
    resolver: Resolver,
    analysis: SpfAnalysis,
    kind: str,
    target: str,
    *,
    depth: int,
    terminal: bool,
) -> None:
    """Fetch the record an ``include`` or ``redirect`` names and walk it; a target with no
    record, several or a bad one is a permerror for receivers (RFC 7208 5.2, 6.1)."""
    analysis.reached.append(target.lower().rstrip("."))
    how = "included" if kind == "include" else "the redirect target"
    try:
        found = await _spf_records(resolver, target)
    except DnsError as exc:
        analysis.dns_errors.append(exc)
        return
    if not found:
        analysis.void_lookups += 1
        analysis.problems.append(f"{target} ({how}) has no SPF record")
        return
    if len(found) > 1:
        analysis.problems.append(f"{target} ({how}) has {len(found)} SPF records")
        return
    try:
        nested = parse_spf(found[0])
    except SpfError as exc:
        analysis.problems.append(f"{target} ({how}): {exc}")
        return
    if terminal:  # the redirect target's all is the domain's last word
        every = nested.all
        analysis.all_qualifier = every.qualifier if every is not None else None
    await _walk(resolver, analysis, nested, target, depth=depth + 1, terminal=terminal)


async def _count_void(resolver: Resolver, analysis: SpfAnalysis, kind: str, target: str) -> None:
    """An ``a``, ``mx`` or ``exists`` term whose name has no record is a void lookup."""
    try:
        if kind == "mx":
            empty = not await resolver.mx(target)
        else:
            empty = not await resolver.query(target, "A") and (
                kind == "exists" or not await resolver.query(target, "AAAA")
            )
    except DnsNameNotFound:
        empty = True
    except DnsError as exc:
        analysis.dns_errors.append(exc)
        return
    if empty:
        analysis.void_lookups += 1


def _term(word: str) -> SpfTerm:
    """One term, checked against RFC 7208 section 12."""
    qualifier, body = ("+", word) if word[0] not in "+-~?" else (word[0], word[1:])
    name_match = re.match(r"[A-Za-z][A-Za-z0-9_.-]*", body)
    if name_match is None:
        raise SpfError(f"{word!r} is not an SPF term")
    name, rest = name_match.group(0).lower(), body[name_match.end() :]
    if rest.startswith("=") and word[0] not in "+-~?":
        if not _MODIFIER_NAME.fullmatch(name):
            raise SpfError(f"{word!r}: a bad modifier name")
        setting = rest[1:]
        if name in ("redirect", "exp"):
            _domain_spec(setting, word)
        else:
            _macro_string(setting, word)
        return SpfTerm(name, "", setting, word)
    if name not in _MECHANISMS:
        raise SpfError(f"unknown mechanism {name!r} in {word!r}")
    value: str | None = None
    if rest.startswith(":"):
        value = rest[1:]
        if not value:
            raise SpfError(f"{word!r}: nothing after the colon")
    elif rest and not (rest.startswith("/") and name in ("a", "mx")):
        raise SpfError(f"{word!r}: unexpected {rest!r} after {name}")
    if name in _NEEDS_VALUE and value is None:
        raise SpfError(f"{word!r}: {name} needs a value ({name}:...)")
    if name == "all" and (value is not None or rest):
        raise SpfError(f"{word!r}: all takes no value")
    if name in ("ip4", "ip6"):
        _network(name, value or "", word)
    elif name in ("a", "mx"):
        spec, cidr = _split_cidr(value if value is not None else rest, word)
        if spec:
            _domain_spec(spec, word)
        _dual_cidr(cidr, word)
    elif value is not None:
        _domain_spec(value, word)
    return SpfTerm(name, qualifier, value if value is not None else (rest or None), word)


def _network(kind: str, value: str, word: str) -> None:
    address, _, prefix = value.partition("/")
    version = 4 if kind == "ip4" else 6
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise SpfError(f"{word!r}: {address!r} is not an IPv{version} address") from None
    if parsed.version != version:
        raise SpfError(f"{word!r}: {address!r} is not an IPv{version} address")
    limit = 32 if version == 4 else 128
    if prefix and (not prefix.isdigit() or int(prefix) > limit or len(prefix) > 3):
        raise SpfError(f"{word!r}: /{prefix} is not a prefix length (0 to {limit})")


def _split_cidr(value: str, word: str) -> tuple[str, str]:
    """``example.com/24//64`` -> (``example.com``, ``/24//64``)."""
    index = value.find("/")
    return (value, "") if index < 0 else (value[:index], value[index:])


def _dual_cidr(cidr: str, word: str) -> None:
    if not cidr:
        return
    match = re.fullmatch(r"(?:/([0-9]{1,2}))?(?://([0-9]{1,3}))?", cidr)
    if (
        match is None
        or (match.group(1) and int(match.group(1)) > 32)
        or (match.group(2) and int(match.group(2)) > 128)
    ):
        raise SpfError(f"{word!r}: {cidr!r} is not a CIDR length (/0-32, //0-128)")


def _macro_string(value: str, word: str) -> None:
    rest = _MACRO.sub("", value)
    if "%" in rest:
        raise SpfError(f"{word!r}: a bad macro (%{{letter...}}, %%, %_ or %-)")
    if any(not 0x21 <= ord(char) <= 0x7E for char in rest):
        raise SpfError(f"{word!r}: characters SPF does not allow")


def _domain_spec(value: str, word: str) -> None:
    """A domain-spec: a macro-string ending in a top label or a macro."""
    if not value:
        raise SpfError(f"{word!r}: a domain is missing")
    _macro_string(value, word)
    if _MACRO_END.search(value):
        return  # ends in a macro-expand
    labels = value.rstrip(".").split(".")
    if len(labels) < 2 or not _TOPLABEL.fullmatch(labels[-1]):
        raise SpfError(f"{word!r}: {value!r} is not a domain name")
    if any(not label for label in labels) or any(len(label) > 63 for label in labels):
        raise SpfError(f"{word!r}: {value!r} is not a domain name")
