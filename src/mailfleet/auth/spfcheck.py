"""SPF evaluation (RFC 7208 ``check_host``): may this IP address send for this domain?

The evaluation is pyspf's, a long-standing implementation of RFC 7208 (its
macros, CNAME handling, the 10-lookup and 2-void-lookup limits, the
``exp=`` explanations). Its DNS lookups are ours: every name pyspf asks goes
through the fleet's :class:`~mailfleet.auth.dns.Resolver`, so tests point it
at a loopback DNS server and production at the configured nameservers, with
one cache.

pyspf looks names up through one module-level function, ``spf.DNSLookup``,
chosen at import. On first use this module replaces it once with a function
that asks the resolver of the evaluation running in the current thread (a
thread-local set by :func:`check_host`) and falls back to pyspf's own lookup
for any other caller. pyspf is synchronous, so an evaluation runs in a
worker thread, unless every name it needs is in the resolver's cache: each
evaluation is first tried on the calling thread against the cache alone
(:meth:`~mailfleet.auth.dns.Resolver.cached`), and goes to a thread only
when a name is missing (a thread hop costs more than pyspf's evaluation;
the MX verifies every message it receives). Its result is a :class:`SpfVerdict`.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio.to_thread
import dns.rdata
from dns.rdtypes.ANY.MX import MX
from dns.rdtypes.ANY.PTR import PTR
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.txtbase import TXTBase

from mailfleet.model.errors import DnsError, DnsNameNotFound, InvalidInput

if TYPE_CHECKING:
    from .dns import Resolver

__all__ = ["SpfResult", "SpfVerdict", "check_host", "check_host_cached"]

SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"]
"""The seven results of RFC 7208 section 2.6."""

_RESULTS: frozenset[str] = frozenset(
    ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
)


@dataclass(frozen=True, slots=True)
class SpfVerdict:
    """The SPF result for one identity of one SMTP session.

    ``identity`` is ``"mailfrom"`` (the envelope sender's domain) or
    ``"helo"`` (the HELO name, checked when the envelope sender is empty, as
    for bounces); ``domain`` is the domain whose record was evaluated.
    """

    result: SpfResult
    domain: str
    identity: Literal["mailfrom", "helo"]
    explanation: str

    @property
    def passed(self) -> bool:
        """Whether the address is authorised (``pass``)."""
        return self.result == "pass"


async def check_host(resolver: Resolver, ip: str, *, sender: str, helo: str) -> SpfVerdict:
    """Evaluate SPF for a client at ``ip`` that said ``HELO helo`` and ``MAIL FROM:<sender>``.

    An empty ``sender`` checks the HELO identity (``postmaster@helo``).
    Temporary DNS failures answer ``temperror``, records that cannot be
    evaluated ``permerror``: never an exception, except
    :class:`~mailfleet.model.errors.InvalidInput` (``field="ip"``) for an
    ``ip`` that is not an address.
    """
    verdict = check_host_cached(resolver, ip, sender=sender, helo=helo)
    if verdict is not None:
        return verdict
    # The thread runs in this task's context: what the lookups note (answers_expiry) is seen.
    context = contextvars.copy_context()
    found = await anyio.to_thread.run_sync(context.run, _evaluate, resolver, ip, sender, helo)
    assert found is not None
    return found


def check_host_cached(resolver: Resolver, ip: str, *, sender: str, helo: str) -> SpfVerdict | None:
    """:func:`check_host` from the resolver's cache alone, on the calling thread: the
    verdict, or None when a name it needs is not cached (then :func:`check_host`
    looks it up, in a thread). Raises :class:`~mailfleet.model.errors.InvalidInput`
    (``field="ip"``) for an ``ip`` that is not an address."""
    import ipaddress

    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise InvalidInput("ip", f"{ip!r} is not an IP address", value=ip) from None
    return _evaluate(resolver, ip, sender, helo, cached_only=True)


_active = threading.local()


def _evaluate(
    resolver: Resolver, ip: str, sender: str, helo: str, *, cached_only: bool = False
) -> SpfVerdict | None:
    """The verdict; with ``cached_only``, None as soon as a name is not in the cache."""
    spf = _pyspf()
    query = spf.query(i=ip, s=sender, h=helo, querytime=resolver.timeout)
    identity: Literal["mailfrom", "helo"] = "helo" if query.ident == "helo" else "mailfrom"
    _active.resolver = resolver
    _active.cached_only = cached_only
    _active.missed = False
    try:
        result, _code, explanation = query.check()
    except Exception as exc:  # pyspf raises for a few malformed inputs; it is still a verdict
        result, explanation = "permerror", f"{type(exc).__name__}: {exc}"
    finally:
        _active.resolver = None
        _active.cached_only = False
    if _active.missed:  # pyspf swallows some errors (exp=, ptr): the flag says it all
        return None
    if result not in _RESULTS:  # pyspf's RFC 4408 names ("unknown", "error") in old modes
        result = {"unknown": "permerror", "error": "temperror"}.get(result, "permerror")
    return SpfVerdict(cast(SpfResult, result), str(query.d).lower(), identity, str(explanation))


@functools.cache
def _pyspf() -> Any:
    """pyspf, with its DNS lookups sent to the running evaluation's resolver."""
    import spf

    fallback: Callable[..., list[Any]] = spf.DNSLookup

    def lookup(name: str, qtype: str, strict: object = True, timeout: float = 20) -> list[Any]:
        resolver: Resolver | None = getattr(_active, "resolver", None)
        if resolver is None:
            return fallback(name, qtype, strict, timeout)
        try:
            if getattr(_active, "cached_only", False):
                found = resolver.cached(name, qtype)
                if found is None:
                    _active.missed = True
                    raise spf.TempError(f"{name} {qtype} is not cached")
                records = found
            else:
                records = resolver.query_sync(name, qtype, timeout=timeout)
        except DnsNameNotFound:
            return []
        except InvalidInput:
            return []  # no such name can exist
        except DnsError as exc:
            raise spf.TempError(f"DNS {exc}") from None
        return [((name, qtype), value) for value in map(_value, records) if value is not None]

    spf.DNSLookup = lookup
    return spf


def _value(rdata: dns.rdata.Rdata) -> object:
    """A record as pyspf's dnspython lookup gives it."""
    if isinstance(rdata, A | AAAA):
        return rdata.address
    if isinstance(rdata, MX):
        return (rdata.preference, rdata.exchange)
    if isinstance(rdata, PTR):
        return rdata.target.to_text(True)
    if isinstance(rdata, TXTBase):
        return rdata.strings
    return None
