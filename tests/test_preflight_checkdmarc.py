"""Our SPF and DMARC verdicts, cross-checked with checkdmarc (an independent checker) on every
test zone, both asking the same loopback DNS server.

Compared: whether each record is *valid* in RFC terms (SPF: one record, correct syntax,
usable nested records, at most 10 DNS lookups and 2 void lookups, nested includes
counted; DMARC: one record that parses, found at the domain or its organizational
domain), the lookup counts of a valid SPF record, and where the DMARC record was found.
A record checkdmarc calls invalid must fail our check.

Our preflight asks more of a *sending* domain than validity; where it fails a record
checkdmarc finds valid, the reason is listed in ``OURS_ONLY`` and the test says why.
checkdmarc is only asked for SPF and DMARC (its MTA-STS check fetches HTTPS, its DNSSEC
check asks the root), through the loopback server alone; an audit hook records every
address a socket is pointed at while it runs, so reaching the network fails the test.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import checkdmarc.dmarc
import checkdmarc.spf
import checkdmarc.utils
import dns.nameserver
import pytest

import zones
from dnsserver import DnsServer
from mailfleet.auth.dmarc import lookup_dmarc
from mailfleet.auth.dns import Resolver
from mailfleet.auth.preflight import preflight
from mailfleet.auth.spf import analyse_spf

pytestmark = pytest.mark.anyio

OURS_ONLY: dict[str, str] = {
    # Records valid by RFC 7208, which our spf check fails because the domain cannot
    # send with them; checkdmarc has no view on our relay and only warns on ``all``.
    "no_all": "without all, mail from any other host is neutral (RFC 7208 4.7): a valid "
    "record, which checkdmarc only warns about; we fail it, forged mail would not be refused",
    "plus_all": "+all is valid syntax (checkdmarc warns); it authorises every host, so we fail",
    "redirect_to_plus_all": "the same +all, reached through a redirect",
    "relay_not_authorised": "valid, but the relay's address gets fail: our mail would fail SPF",
    "include_missing": "valid, but the relay's include is not there",
    "bounce_relay_not_authorised": "valid, but the relay's address gets fail at the bounce "
    "domain: our bounces' MAIL FROM would fail SPF",
}

DMARC_OURS_ONLY: dict[str, str] = {
    # RFC 7489 6.3: "syntax errors in the remainder of the record SHOULD be discarded in
    # favor of default values". checkdmarc does so (aspf=x read as aspf=r, with a
    # warning); our preflight refuses the record: the operator meant something, and
    # receivers that read it strictly apply no policy at all.
    "dmarc_bad_tags": "a bad aspf= value, which checkdmarc replaces by the default",
}

_watched = threading.Event()  # every thread: a lookup in a thread of checkdmarc's is seen too
_destinations: list[tuple[str, object]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Where sockets connect or send while checkdmarc runs."""
    if not _watched.is_set():
        return
    if event in ("socket.connect", "socket.sendto"):
        _destinations.append((event, args[1]))
    elif event == "socket.getaddrinfo":
        _destinations.append((event, (args[0], args[1])))


sys.addaudithook(_audit)  # an audit hook stays for the process: it only acts when asked


@contextmanager
def loopback_only() -> Iterator[None]:
    """Fail when code run inside talks to any address but the loopback DNS server."""
    _destinations.clear()
    _watched.set()
    try:
        yield
    finally:
        _watched.clear()
    assert _destinations, "no DNS query seen: the audit hook is not watching"
    for event, address in _destinations:
        host = address[0] if isinstance(address, tuple) else address
        assert host in ("127.0.0.1", b"127.0.0.1"), (event, address)


def _checkdmarc_spf(server: DnsServer, domain: str) -> dict[str, Any]:
    checkdmarc.utils.DNS_CACHE.clear()  # its answers are cached per process, by name
    nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", server.port)]
    with loopback_only():
        return dict(checkdmarc.spf.check_spf(domain, nameservers=nameservers, timeout=1))


def _checkdmarc_dmarc(server: DnsServer, domain: str) -> dict[str, Any]:
    checkdmarc.utils.DNS_CACHE.clear()
    nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", server.port)]
    with loopback_only():
        return dict(checkdmarc.dmarc.check_dmarc(domain, nameservers=nameservers, timeout=1))


@pytest.mark.parametrize("name", sorted(zones.VARIANTS))
async def test_checkdmarc_agrees_on_spf_and_dmarc(dns_server: DnsServer, name: str) -> None:
    variant = zones.VARIANTS[name]
    want = zones.publish_good_zone(dns_server, variant.want)
    variant.breaks(dns_server)
    # checkdmarc walks the DNS tree for DMARC (RFC 9989) up to _dmarc.com: the public
    # suffix's zone answers NXDOMAIN there, as on the internet, not REFUSED
    dns_server.set("com", "TXT", ["a public suffix"])
    resolver = Resolver([dns_server.address], timeout=1)
    report = await preflight(resolver, want)
    spf_domains = [("spf", want.domain)]
    if want.envelope_domain != want.domain:
        spf_domains.append(("bounce_spf", want.envelope_domain))

    for check_name, domain in spf_domains:
        ours = await analyse_spf(Resolver([dns_server.address], timeout=1), domain)
        theirs = _checkdmarc_spf(dns_server, domain)
        assert ours.valid == theirs["valid"], (domain, ours, theirs)
        check = report.check(check_name)
        if not theirs["valid"]:  # an invalid record never passes our check
            assert check.status == "fail", (check, theirs["error"])
        elif check.status == "fail":
            assert name in OURS_ONLY, (check, theirs)
        if theirs["valid"]:
            assert (ours.lookups, ours.void_lookups) == (
                theirs["dns_lookups"],
                theirs["void_dns_lookups"],
            ), (ours, theirs)
        if check_name == "spf" and variant.spf_valid is not None:  # built to test SPF
            assert ours.valid is variant.spf_valid

    ours_dmarc = await lookup_dmarc(Resolver([dns_server.address], timeout=1), want.domain)
    theirs_dmarc = _checkdmarc_dmarc(dns_server, want.domain)
    ours_valid = ours_dmarc.record is not None
    if name in DMARC_OURS_ONLY:
        assert (ours_valid, theirs_dmarc["valid"]) == (False, True), theirs_dmarc
        assert theirs_dmarc["warnings"], theirs_dmarc  # checkdmarc noticed, and warned
        assert report.check("dmarc").status == "fail"
        return
    assert ours_valid == theirs_dmarc["valid"], (ours_dmarc, theirs_dmarc)
    # a DMARC record checkdmarc calls invalid fails our check, and only such a record does
    # (SPF that cannot align is a warning: the record itself is valid)
    assert (report.check("dmarc").status == "fail") is (not theirs_dmarc["valid"])
    if ours_valid:
        assert theirs_dmarc["location"] == ours_dmarc.record_domain
    if variant.dmarc_valid is not None:
        assert ours_valid is variant.dmarc_valid


def test_every_difference_named_is_a_variant() -> None:
    assert set(OURS_ONLY) | set(DMARC_OURS_ONLY) <= set(zones.VARIANTS)
    assert all(zones.VARIANTS[name].status == "fail" for name in OURS_ONLY)
    assert all(zones.VARIANTS[name].status == "fail" for name in DMARC_OURS_ONLY)
