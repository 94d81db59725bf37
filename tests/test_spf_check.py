"""SPF evaluation (pyspf's check_host) over the loopback DNS server."""

from __future__ import annotations

import pytest

from dnsserver import DnsServer
from mailfleet.auth.dns import Resolver
from mailfleet.auth.spfcheck import check_host
from mailfleet.model.errors import InvalidInput

pytestmark = pytest.mark.anyio


@pytest.fixture
def resolver(dns_server: DnsServer) -> Resolver:
    return Resolver([dns_server.address], timeout=2)


async def test_an_authorised_address_passes_and_another_fails(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.set("example.net", "TXT", ["v=spf1 ip4:192.0.2.0/24 -all"])
    ok = await check_host(resolver, "192.0.2.10", sender="a@example.net", helo="mx.example.net")
    assert (ok.result, ok.domain, ok.identity) == ("pass", "example.net", "mailfrom")
    assert ok.passed
    bad = await check_host(resolver, "198.51.100.1", sender="a@example.net", helo="h")
    assert bad.result == "fail"


async def test_includes_mx_and_a_mechanisms_are_followed(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.set("example.net", "TXT", ["v=spf1 mx include:_spf.example.org ~all"])
    dns_server.set("example.net", "MX", [(10, "mx.example.net")])
    dns_server.set("mx.example.net", "A", ["192.0.2.25"])
    dns_server.set("_spf.example.org", "TXT", ["v=spf1 a:out.example.org -all"])
    dns_server.set("out.example.org", "A", ["203.0.113.7"])
    dns_server.set("out.example.org", "AAAA", ["2001:db8::7"])
    for ip in ("192.0.2.25", "203.0.113.7"):
        verdict = await check_host(resolver, ip, sender="x@example.net", helo="h.example.net")
        assert verdict.result == "pass", ip
    soft = await check_host(resolver, "198.51.100.9", sender="x@example.net", helo="h")
    assert soft.result == "softfail"


async def test_a_bounce_checks_the_helo_name(dns_server: DnsServer, resolver: Resolver) -> None:
    dns_server.set("mta.example.net", "TXT", ["v=spf1 ip6:2001:db8::/32 -all"])
    verdict = await check_host(resolver, "2001:db8::1", sender="", helo="mta.example.net")
    assert (verdict.result, verdict.identity, verdict.domain) == (
        "pass",
        "helo",
        "mta.example.net",
    )


async def test_no_record_is_none_and_a_broken_one_permerror(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    dns_server.set("example.net", "A", ["192.0.2.1"])
    none = await check_host(resolver, "192.0.2.1", sender="a@example.net", helo="h")
    assert none.result == "none"
    dns_server.set("broken.example.net", "TXT", ["v=spf1 ip4:192.0.2.300 -all"])
    broken = await check_host(resolver, "192.0.2.1", sender="a@broken.example.net", helo="h")
    assert broken.result == "permerror"
    dns_server.set("two.example.net", "TXT", ["v=spf1 -all", "v=spf1 +all"])
    two = await check_host(resolver, "192.0.2.1", sender="a@two.example.net", helo="h")
    assert two.result == "permerror"


async def test_more_than_ten_lookups_is_a_permerror(
    dns_server: DnsServer, resolver: Resolver
) -> None:
    names = [f"i{n}.example.net" for n in range(11)]
    dns_server.set("example.net", "TXT", ["v=spf1 " + " ".join(f"a:{n}" for n in names) + " -all"])
    for name in names:
        dns_server.set(name, "A", ["198.51.100.1"])
    verdict = await check_host(resolver, "192.0.2.1", sender="a@example.net", helo="h")
    assert verdict.result == "permerror"
    assert "lookup" in verdict.explanation.lower()


async def test_a_failing_server_is_a_temperror(dns_server: DnsServer, resolver: Resolver) -> None:
    dns_server.set("example.net", "A", ["192.0.2.1"])
    dns_server.servfail("example.net")
    verdict = await check_host(resolver, "192.0.2.1", sender="a@example.net", helo="h")
    assert verdict.result == "temperror"


async def test_a_bad_ip_is_invalid_input(resolver: Resolver) -> None:
    with pytest.raises(InvalidInput, match="not an IP address"):
        await check_host(resolver, "999.1.1.1", sender="a@example.net", helo="h")
