"""Our SPF and DMARC verdicts, cross-checked with checkdmarc (an independent checker) on every
test zone, both asking the same loopback DNS server.

What is compared is whether each record is *valid*: for SPF, one record, correct syntax,
at most 10 DNS lookups (nested includes counted) and 2 void lookups; for DMARC, one
record that parses. Our preflight asks more of a sending domain than validity (a
terminating ``all``, the relay's addresses passing, the include present): checkdmarc
has no view on those, so they are not part of the comparison.
"""

from __future__ import annotations

import checkdmarc.dmarc
import checkdmarc.spf
import checkdmarc.utils
import dns.nameserver
import pytest

import zones
from dnsserver import DnsServer
from mailfleet.auth.dmarc import lookup_dmarc
from mailfleet.auth.dns import Resolver
from mailfleet.auth.spf import LOOKUP_LIMIT, VOID_LOOKUP_LIMIT, analyse_spf

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("name", sorted(zones.VARIANTS))
async def test_checkdmarc_agrees_on_spf_and_dmarc(dns_server: DnsServer, name: str) -> None:
    variant = zones.VARIANTS[name]
    zones.publish_good_zone(dns_server)
    variant.breaks(dns_server)
    resolver = Resolver([dns_server.address], timeout=1)

    spf = await analyse_spf(resolver, zones.DOMAIN)
    ours_spf = (
        spf.error is None
        and not spf.problems
        and spf.lookups <= LOOKUP_LIMIT
        and spf.void_lookups <= VOID_LOOKUP_LIMIT
    )
    ours_dmarc = (await lookup_dmarc(resolver, zones.DOMAIN)).record is not None

    checkdmarc.utils.DNS_CACHE.clear()  # its answers are cached per process, by name
    nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", dns_server.port)]
    theirs_spf = checkdmarc.spf.check_spf(zones.DOMAIN, nameservers=nameservers, timeout=1)
    theirs_dmarc = checkdmarc.dmarc.check_dmarc(zones.DOMAIN, nameservers=nameservers, timeout=1)

    assert ours_spf == theirs_spf["valid"], (spf, theirs_spf)
    assert ours_dmarc == theirs_dmarc["valid"], theirs_dmarc
    if variant.spf_valid is not None:  # the zones built to break SPF: both noticed
        assert ours_spf is variant.spf_valid
    if variant.dmarc_valid is not None:
        assert ours_dmarc is variant.dmarc_valid
