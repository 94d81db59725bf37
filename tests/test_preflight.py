"""The domain preflight against the loopback DNS server: each broken zone gives the right
check the right verdict, the correct zone passes everything, DNS failures are told apart."""

from __future__ import annotations

import pytest

import zones
from dnsserver import DnsServer
from mailfleet.auth.dns import Resolver
from mailfleet.auth.preflight import PreflightCheck, PreflightReport, preflight
from mailfleet.auth.spf import SpfError, parse_spf

pytestmark = pytest.mark.anyio


async def run(server: DnsServer, **changes: object) -> PreflightReport:
    return await preflight(Resolver([server.address], timeout=1), zones.expected(**changes))


async def test_the_correct_zone_passes_every_check(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    report = await run(dns_server)
    assert [check.name for check in report.checks] == [
        "mx",
        "spf",
        "dkim:mf",
        "dkim:mf-ed",
        "dmarc",
        "mta_sts",
        "tls_rpt",
    ]
    assert {check.status for check in report.checks} == {"pass"}, report.as_json()
    assert report.state == "verified"
    assert report.check("spf").found == (zones.GOOD_SPF,)  # the unrelated TXT is not SPF


@pytest.mark.parametrize("name", sorted(zones.VARIANTS))
async def test_each_broken_zone_fails_the_check_that_looks_at_it(
    dns_server: DnsServer, name: str
) -> None:
    variant = zones.VARIANTS[name]
    zones.publish_good_zone(dns_server)
    variant.breaks(dns_server)
    report = await run(dns_server, **variant.expected)
    check = report.check(variant.check)
    assert (check.status, check.dns_error) == (variant.status, None), check
    assert variant.says in check.explanation, check.explanation
    others = [c for c in report.checks if c.name != variant.check and c.status != "pass"]
    assert others == [], others
    if variant.status == "fail":
        assert report.state == "failed"
        assert check.fix
    else:
        assert report.state == "verified"


async def test_a_record_that_drifts_is_caught_by_the_next_check(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    assert (await run(dns_server)).state == "verified"
    dns_server.set(zones.DOMAIN, "TXT", ["v=spf1 ip4:198.51.100.9 -all"])
    drifted = await run(dns_server)  # a fresh resolver: no cached answer hides the change
    assert [check.name for check in drifted.failing] == ["spf"]


async def test_a_domain_that_does_not_exist_fails_everything_as_nxdomain(
    dns_server: DnsServer,
) -> None:
    dns_server.set("other.example.com", "A", ["192.0.2.1"])  # the zone exists, the name not
    report = await run(dns_server, domain="gone.example.com")
    assert {check.dns_error for check in report.checks} == {"nxdomain"}
    assert {check.status for check in report.checks} == {"fail"}
    assert not report.temporary


@pytest.mark.parametrize(
    ("breaking", "problem"), [("servfail", "servfail"), ("silence", "timeout")]
)
async def test_a_lookup_that_fails_is_not_a_wrong_record(
    dns_server: DnsServer, breaking: str, problem: str
) -> None:
    zones.publish_good_zone(dns_server)
    getattr(dns_server, breaking)(f"_dmarc.{zones.DOMAIN}")
    report = await run(dns_server)
    check = report.check("dmarc")
    assert (check.status, check.dns_error) == ("fail", problem)
    assert "not a wrong record" in check.explanation
    assert check.temporary
    assert report.temporary  # the only failure is the DNS's


async def test_a_report_round_trips_through_json(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    zones.VARIANTS["malformed_spf"].breaks(dns_server)
    report = await run(dns_server)
    again = PreflightReport.from_json(report.as_json())
    assert again == report
    assert PreflightCheck.from_json(report.checks[0].as_json()) == report.checks[0]


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ("spf1 -all", "starts with v=spf1"),
        ("v=spf1 ip4:192.0.2.1/33 -all", "prefix length"),
        ("v=spf1 ip6:192.0.2.1 -all", "not an IPv6 address"),
        ("v=spf1 a:example -all", "not a domain name"),
        ("v=spf1 include -all", "include needs a value"),
        ("v=spf1 mx:example.com/40 -all", "CIDR"),
        ("v=spf1 exists:%{x}.example.com -all", "bad macro"),
        ("v=spf1 redirect=a.example.com redirect=b.example.com", "appears twice"),
        ("v=spf1 -all:x", "all takes no value"),
    ],
)
def test_spf_syntax_errors_say_what_is_wrong(record: str, says: str) -> None:
    with pytest.raises(SpfError, match=says):
        parse_spf(record)


def test_spf_terms_are_read_with_their_qualifiers() -> None:
    record = parse_spf(
        "v=spf1 ip4:192.0.2.0/24 ~include:_spf.example.com mx/24 exp=x.example.com -all"
    )
    assert [(t.qualifier, t.name) for t in record.terms] == [
        ("+", "ip4"),
        ("~", "include"),
        ("+", "mx"),
        ("", "exp"),
        ("-", "all"),
    ]
    assert record.all is not None
    assert record.all.qualifier == "-"
    assert [t.name for t in record.terms if t.queries_dns] == ["include", "mx"]
