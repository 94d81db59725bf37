"""DNS lookups through one configurable resolver: TXT, MX, addresses, and dkimpy's ``dnsfunc``.

Every lookup of the project goes through a :class:`Resolver`, built from the
settings (``dns_nameservers``, ``dns_timeout``) with
:meth:`Resolver.from_settings`. With nameservers given it asks those only, on
their ports (dnspython's ``Do53Nameserver``), and ignores
``/etc/resolv.conf``; with none it asks the system's nameservers. Names are
always absolute: no search list is applied.

**Timeout.** ``timeout`` bounds a whole lookup, every retry and every
nameserver included (dnspython's ``lifetime``); one try at one nameserver
waits at most 2 s (less when the timeout is shorter), so a dead first server
leaves time for the next.

**Cache.** Answers are kept for their TTL in one bounded LRU cache
(:data:`CACHE_SIZE` entries, dnspython's ``LRUCache``), shared by the
asynchronous lookups and :meth:`Resolver.dkim_dnsfunc`. Negative answers
are cached too, as RFC 2308 says: a missing name (NXDOMAIN) or a name
without records of the type asked stays missing for the TTL of the zone's
SOA record or its ``minimum`` field, whichever is smaller, as the authority
section of the answer gives them (not at all when the answer carries no
SOA). Failures and timeouts are never cached.

**Outcomes.** A lookup answers a list, empty when the name exists without
records of that type; otherwise it raises a
:class:`~mailfleet.model.errors.DnsError`:
:class:`~mailfleet.model.errors.DnsNameNotFound` (NXDOMAIN),
:class:`~mailfleet.model.errors.DnsServerFailure` (every nameserver answered
SERVFAIL or REFUSED, or none is configured) or
:class:`~mailfleet.model.errors.DnsTimeout`. A malformed name is an
:class:`~mailfleet.model.errors.InvalidInput` (``field="name"``).

Answers use EDNS0 with a 1,232-byte UDP payload (the DNS flag day's size);
an answer truncated over UDP is asked again over TCP.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, TypeVar

import anyio
import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.txtbase import TXTBase

from mailfleet.model.errors import (
    DnsError,
    DnsNameNotFound,
    DnsServerFailure,
    DnsTimeout,
    InvalidInput,
)
from mailfleet.model.nameservers import Nameserver, parse_nameserver

__all__ = [
    "CACHE_SIZE",
    "DEFAULT_TIMEOUT",
    "DkimDnsFunc",
    "DnsSettings",
    "Resolver",
    "answers_expiry",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds a lookup may take when nothing else is said (the ``dns_timeout`` default)."""

CACHE_SIZE = 10_000
"""Answers kept at most; the least recently used go first."""

_FRESH_CACHE_SIZE = 1_000  # answers one fresh resolver (one domain check) keeps
_TRY_TIMEOUT = 2.0  # seconds one try at one nameserver may take
_EDNS_PAYLOAD = 1232  # bytes of UDP answer we accept (EDNS0)

DkimDnsFunc = Callable[..., bytes | None]
"""dkimpy's ``dnsfunc``: ``(name: bytes, timeout: int = 5) -> bytes | None``."""

_R = TypeVar("_R", bound=dns.resolver.BaseResolver)


class DnsSettings(Protocol):
    """What :meth:`Resolver.from_settings` reads (``mailfleet.Settings`` has both)."""

    @property
    def dns_nameservers(self) -> Sequence[str]:
        """Entries ``host`` or ``host:port``; empty for the system's nameservers."""

    @property
    def dns_timeout(self) -> float:
        """Seconds a lookup may take."""


class Resolver:
    """The one DNS resolver: lookups over ``nameservers``, cached, within ``timeout``.

    ``nameservers`` are entries as in the ``dns_nameservers`` setting
    (``192.0.2.53``, ``192.0.2.53:5353``, ``[2001:db8::53]:53``) or
    :class:`~mailfleet.model.nameservers.Nameserver` values; none means the
    system's. ``timeout`` (seconds, > 0) bounds each lookup; ``cache_size``
    is how many answers the cache keeps. Raises
    :class:`~mailfleet.model.errors.InvalidInput` (``field="nameservers"`` or
    ``"timeout"``) for a bad entry or timeout.
    """

    __slots__ = ("_async", "_cache", "_nameservers", "_sync", "_timeout")

    def __init__(
        self,
        nameservers: Iterable[str | Nameserver] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        if isinstance(nameservers, str):
            raise InvalidInput("nameservers", "expected a list of entries", value=nameservers)
        self._nameservers = tuple(
            entry if isinstance(entry, Nameserver) else parse_nameserver(entry, field="nameservers")
            for entry in nameservers
        )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise InvalidInput("timeout", "expected seconds, a number > 0", value=timeout)
        self._timeout = float(timeout)
        self._cache = dns.resolver.LRUCache(cache_size)
        self._async = self._configure(dns.asyncresolver.Resolver)
        self._sync = self._configure(dns.resolver.Resolver)

    @classmethod
    def from_settings(cls, settings: DnsSettings) -> Resolver:
        """The resolver the settings describe (``dns_nameservers``, ``dns_timeout``)."""
        return cls(settings.dns_nameservers, timeout=settings.dns_timeout)

    def fresh(self) -> Resolver:
        """A resolver on the same nameservers and timeout whose cache starts empty (and
        is dropped with it): for a check that must see what is published now, such as
        a domain's preflight, rather than answers cached before a fix."""
        return Resolver(self._nameservers, timeout=self._timeout, cache_size=_FRESH_CACHE_SIZE)

    @property
    def nameservers(self) -> tuple[Nameserver, ...]:
        """The nameservers asked; empty when they are the system's."""
        return self._nameservers

    @property
    def timeout(self) -> float:
        """Seconds a lookup may take, in all."""
        return self._timeout

    async def query(
        self, name: str, rdtype: str | dns.rdatatype.RdataType
    ) -> list[dns.rdata.Rdata]:
        """The records of type ``rdtype`` (``"TLSA"``, ``"SOA"``...) at ``name``, as dnspython's
        rdata; empty when the name has none of that type (CNAMEs are followed).

        Raises :class:`~mailfleet.model.errors.DnsError` (see the module), or
        :class:`~mailfleet.model.errors.InvalidInput` for a malformed name
        (``field="name"``) or an unknown type (``field="rdtype"``).
        """
        qname, qtype = _question(name, rdtype)
        try:
            answer = await self._async.resolve(qname, qtype, search=False, raise_on_no_answer=False)
        except dns.exception.DNSException as exc:
            self._note_failure(qname)
            raise _error(exc, qname, qtype, self._timeout) from exc
        _note(answer.expiration)
        return [] if answer.rrset is None else list(answer.rrset)

    async def txt(self, name: str, *, missing_empty: bool = False) -> list[str]:
        """The TXT records at ``name``, each one's strings joined (as bytes, read as latin-1).

        With ``missing_empty``, a name that does not exist answers an empty list
        rather than :class:`~mailfleet.model.errors.DnsNameNotFound`: for records
        (SPF, DMARC, DKIM...) whose absence is an answer, not an error.
        """
        try:
            records = await self.query(name, "TXT")
        except DnsNameNotFound:
            if missing_empty:
                return []
            raise
        return [
            b"".join(rdata.strings).decode("latin-1")
            for rdata in records
            if isinstance(rdata, TXTBase)
        ]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """The MX records at ``name``: ``(preference, host)``, sorted, hosts in lower case
        without the final dot; a null MX (RFC 7505) is ``(0, "")``."""
        return sorted(
            (rdata.preference, _host(rdata.exchange))
            for rdata in await self.query(name, "MX")
            if isinstance(rdata, MX)
        )

    async def addresses(self, name: str) -> list[str]:
        """The IPv4 (A) then IPv6 (AAAA) addresses of ``name``, asked at once, each family
        in numeric order.

        Raises the first family's error when either lookup fails: a half
        answer is never given as the whole.
        """
        _question(name, "A")  # a malformed name fails here, not inside the tasks
        found: dict[str, list[str] | DnsError] = {}

        async def ask(rdtype: str) -> None:
            try:
                records = await self.query(name, rdtype)
                found[rdtype] = sorted(
                    (rdata.address for rdata in records if isinstance(rdata, A | AAAA)),
                    key=ipaddress.ip_address,
                )
            except DnsError as exc:
                found[rdtype] = exc

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ask, "A")
            tasks.start_soon(ask, "AAAA")
        addresses: list[str] = []
        for rdtype in ("A", "AAAA"):
            result = found[rdtype]
            if isinstance(result, DnsError):
                raise result
            addresses.extend(result)
        return addresses

    def query_sync(
        self,
        name: str,
        rdtype: str | dns.rdatatype.RdataType,
        *,
        timeout: float | None = None,
    ) -> list[dns.rdata.Rdata]:
        """:meth:`query`, blocking: for libraries that look names up from a worker thread
        (dkimpy, pyspf). Same nameservers, same cache; ``timeout`` may shorten the
        resolver's own."""
        qname, qtype = _question(name, rdtype)
        lifetime = self._timeout if not timeout or timeout <= 0 else min(self._timeout, timeout)
        try:
            answer = self._sync.resolve(
                qname, qtype, search=False, raise_on_no_answer=False, lifetime=lifetime
            )
        except dns.exception.DNSException as exc:
            self._note_failure(qname)
            raise _error(exc, qname, qtype, lifetime) from exc
        _note(answer.expiration)
        return [] if answer.rrset is None else list(answer.rrset)

    def cached(
        self, name: str, rdtype: str | dns.rdatatype.RdataType
    ) -> list[dns.rdata.Rdata] | None:
        """What the cache holds for :meth:`query` of ``name`` / ``rdtype``, asking no
        server: the records (empty for a cached empty answer), or None when the cache
        has no live answer. A cached NXDOMAIN raises
        :class:`~mailfleet.model.errors.DnsNameNotFound`, as :meth:`query` would.

        For evaluations that can run without a thread when everything they need
        is cached (SPF of a known sender); the cache is the one lookups fill.
        """
        qname, qtype = _question(name, rdtype)
        answer = self._cache.get((qname, qtype, dns.rdataclass.IN))
        if answer is not None:
            _note(answer.expiration)
            return [] if answer.rrset is None else list(answer.rrset)
        missing = self._cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        if missing is not None and missing.response.rcode() == dns.rcode.NXDOMAIN:
            _note(missing.expiration)
            kind = dns.rdatatype.to_text(qtype)
            raise DnsNameNotFound(_host(qname), kind, "no such name (NXDOMAIN)")
        return None

    def _note_failure(self, qname: dns.name.Name) -> None:
        """A lookup that raised: a cached NXDOMAIN lives for its TTL, anything else not at all."""
        missing = self._cache.get((qname, dns.rdatatype.ANY, dns.rdataclass.IN))
        _note(missing.expiration if missing is not None else 0.0)

    def dkim_dnsfunc(self) -> DkimDnsFunc:
        """A TXT lookup for dkimpy's ``dnsfunc=`` (``dkim.DKIM(data).verify(dnsfunc=...)``).

        dkimpy calls it, synchronously and from whatever thread verifies,
        with the key's name (``b"sel._domainkey.example.com."``); it answers
        the first TXT record's strings joined, or None when the name or the
        record does not exist (dkimpy then reports the key missing). It asks
        the same nameservers through the same cache as the asynchronous
        lookups, within the smaller of dkimpy's ``timeout`` and the
        resolver's. A server failure or a timeout raises
        :class:`~mailfleet.model.errors.DnsServerFailure` /
        :class:`~mailfleet.model.errors.DnsTimeout` out of dkimpy's
        ``verify``: a temporary error, not a bad signature.
        """

        def lookup(name: bytes, timeout: float = DEFAULT_TIMEOUT) -> bytes | None:
            try:
                text = name.decode("utf-8")
                records = self.query_sync(text, dns.rdatatype.TXT, timeout=timeout)
            except (UnicodeDecodeError, InvalidInput, DnsNameNotFound):
                return None  # no such name can hold a key
            for rdata in records:
                if isinstance(rdata, TXTBase):
                    return b"".join(rdata.strings)
            return None

        return lookup

    def _configure(self, factory: type[_R]) -> _R:
        """A dnspython resolver (``factory``) on these nameservers, timeout and cache."""
        if self._nameservers:
            resolver = factory(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(server.host, server.port)
                for server in self._nameservers
            ]
        else:
            try:
                resolver = factory()
            except dns.resolver.NoResolverConfiguration:
                # No /etc/resolv.conf: every lookup answers DnsServerFailure.
                resolver = factory(configure=False)
        resolver.search = []
        resolver.use_search_by_default = False
        resolver.lifetime = self._timeout
        resolver.timeout = min(_TRY_TIMEOUT, self._timeout)
        resolver.use_edns(0, 0, _EDNS_PAYLOAD)
        resolver.cache = self._cache
        return resolver

    def __repr__(self) -> str:
        servers = ", ".join(str(server) for server in self._nameservers) or "system"
        return f"Resolver([{servers}], timeout={self._timeout})"


_expiries: ContextVar[list[float] | None] = ContextVar("mailfleet_dns_expiries", default=None)


@contextmanager
def answers_expiry() -> Iterator[list[float]]:
    """Collect, for the lookups made in this context (worker threads started from it
    included), when each answer expires (``time.time()`` seconds; 0 for a failure
    that is not cached). Lets a caller keep a verdict derived from DNS exactly as
    long as the answers it rests on: until ``min()`` of the list."""
    found: list[float] = []
    token = _expiries.set(found)
    try:
        yield found
    finally:
        _expiries.reset(token)


def _note(expiration: float) -> None:
    found = _expiries.get()
    if found is not None:
        found.append(expiration)


def _question(
    name: str, rdtype: str | dns.rdatatype.RdataType
) -> tuple[dns.name.Name, dns.rdatatype.RdataType]:
    """The absolute name and the type asked, or InvalidInput."""
    if not isinstance(name, str):
        raise InvalidInput("name", f"a DNS name must be a str, not {type(name).__name__}")
    if not name.strip():
        raise InvalidInput("name", "the name is empty (the root is '.')", value=name)
    try:
        qname = dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise InvalidInput("name", f"{name!r} is not a DNS name: {exc}", value=name) from None
    try:
        qtype = dns.rdatatype.RdataType.make(rdtype)
    except (dns.exception.DNSException, ValueError, TypeError):
        raise InvalidInput("rdtype", f"{rdtype!r} is not a DNS record type", value=rdtype) from None
    if dns.rdatatype.is_metatype(qtype):
        raise InvalidInput("rdtype", f"{rdtype!r} cannot be looked up", value=rdtype)
    return qname, qtype


def _host(name: dns.name.Name) -> str:
    """A host name as text: lower case, no final dot; the root is ``""``."""
    return "" if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _error(
    exc: dns.exception.DNSException,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    timeout: float,
) -> DnsError:
    """The mailfleet error for what dnspython raised."""
    name, kind = _host(qname), dns.rdatatype.to_text(rdtype)
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return DnsNameNotFound(name, kind, "no such name (NXDOMAIN)")
    if isinstance(exc, dns.exception.Timeout):
        return DnsTimeout(name, kind, f"no answer within {timeout:g} s")
    if isinstance(exc, dns.resolver.NoNameservers):
        return DnsServerFailure(name, kind, _failures(exc))
    if isinstance(exc, dns.resolver.NoResolverConfiguration):
        return DnsServerFailure(name, kind, f"no nameserver is configured ({exc})")
    return DnsError(name, kind, str(exc) or type(exc).__name__)


def _failures(exc: dns.resolver.NoNameservers) -> str:
    """What each nameserver did: ``127.0.0.1:53 answered SERVFAIL; ...``."""
    said: list[str] = []
    for entry in exc.kwargs.get("errors") or ():
        server, port, error = entry[0], entry[2], entry[3]  # (server, tcp, port, error, ...)
        address = str(server).removeprefix("Do53:").rsplit("@", 1)[0]
        where = str(Nameserver(address, port))
        said.append(f"{where} answered {error}" if isinstance(error, str) else f"{where}: {error}")
    return "; ".join(dict.fromkeys(said)) or "no nameserver is configured"
