"""The domain preflight against the loopback DNS server: each broken zone gives the right
check the right verdict, the correct zone passes everything, DNS failures are told apart
from wrong records, and a record that drifts after a first pass is caught."""

from __future__ import annotations

from datetime import UTC

import pytest

import zones
from dnsserver import DnsServer
from mailfleet.auth import Check, Expected, PreflightReport, preflight
from mailfleet.auth.dns import Resolver
from mailfleet.auth.spf import SpfError, analyse_spf, parse_spf
from mailfleet.model.errors import InvalidInput

pytestmark = pytest.mark.anyio


def resolver(server: DnsServer) -> Resolver:
    """A fresh resolver (no cached answer hides a change of the zone)."""
    return Resolver([server.address], timeout=1)


async def run(server: DnsServer, want: Expected | None = None) -> PreflightReport:
    return await preflight(resolver(server), want or zones.expected())


# -- the correct zone ---------------------------------------------------------------------------


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
    assert all(check.fix is None and check.dns_error is None for check in report.checks)
    assert (report.state, report.failing, report.warnings) == ("verified", (), ())
    assert not report.temporary
    assert report.domain == zones.DOMAIN
    assert report.checked_at.tzinfo is UTC
    spf = report.check("spf")
    assert spf.found == (zones.GOOD_SPF,)  # the unrelated TXT is not SPF
    assert spf.record == zones.DOMAIN
    assert report.check("dmarc").record == f"_dmarc.{zones.DOMAIN}"
    assert report.check("dkim:mf").record == f"mf._domainkey.{zones.DOMAIN}"
    assert report.check("mta_sts").record == f"_mta-sts.{zones.DOMAIN}"
    assert report.check("tls_rpt").record == f"_smtp._tls.{zones.DOMAIN}"


async def test_a_bounce_domain_an_include_and_ipv6_all_pass(dns_server: DnsServer) -> None:
    want = zones.expected(
        envelope_domain=zones.BOUNCES,
        relay_addresses=(zones.RELAY, "2001:db8::25"),
        spf_include="_spf.relay.example.org",
    )
    zones.publish_good_zone(dns_server, want)
    report = await run(dns_server, want)
    names = [check.name for check in report.checks]
    assert "bounce_mx" in names
    assert "bounce_spf" in names
    assert {check.status for check in report.checks} == {"pass"}, report.as_json()
    assert report.check("bounce_spf").record == zones.BOUNCES
    assert "2001:db8::25" in report.check("spf").explanation


# -- each broken zone ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(zones.VARIANTS))
async def test_each_zone_gives_the_check_that_looks_at_it_its_verdict(
    dns_server: DnsServer, name: str
) -> None:
    variant = zones.VARIANTS[name]
    want = zones.publish_good_zone(dns_server, variant.want)
    variant.breaks(dns_server)
    report = await run(dns_server, want)
    check = report.check(variant.check)
    assert (check.status, check.dns_error) == (variant.status, None), check
    assert variant.says in check.explanation, check.explanation
    others = [c for c in report.checks if c.name != variant.check and c.status != "pass"]
    assert others == [], others
    if variant.status == "pass":
        assert check.fix is None
    else:
        assert check.fix, check  # what to publish or change
    assert report.state == ("failed" if variant.status == "fail" else "verified")
    assert report.failing == ((check,) if variant.status == "fail" else ())
    assert report.warnings == ((check,) if variant.status == "warn" else ())
    assert not report.temporary


async def test_the_fix_of_a_wrong_dkim_key_is_our_exact_record(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    zones.VARIANTS["other_dkim_key"].breaks(dns_server)
    check = (await run(dns_server)).check("dkim:mf-ed")
    ours = zones.keys()[1].dns_txt_value
    assert check.fix == f'mf-ed._domainkey.{zones.DOMAIN}. IN TXT "{ours}"'
    assert check.found != (ours,)


async def test_the_fixes_of_spf_and_dmarc_are_records_to_publish(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    zones.VARIANTS["duplicated_spf"].breaks(dns_server)
    zones.VARIANTS["missing_dmarc"].breaks(dns_server)
    report = await run(dns_server)
    assert (
        report.check("spf").fix == f'merge them into one: {zones.DOMAIN}. IN TXT "{zones.GOOD_SPF}"'
    )
    assert set(report.check("spf").found) == {zones.GOOD_SPF, "v=spf1 mx -all"}  # no order
    assert report.check("dmarc").fix == (
        f'_dmarc.{zones.DOMAIN}. IN TXT "v=DMARC1; p=none; adkim=r; aspf=r"'
    )


async def test_strict_spf_alignment_is_fixed_by_relaxing_it(dns_server: DnsServer) -> None:
    variant = zones.VARIANTS["misaligned"]
    want = zones.publish_good_zone(dns_server, variant.want)
    variant.breaks(dns_server)
    check = (await run(dns_server, want)).check("dmarc")
    assert "DKIM alone" in check.explanation
    assert check.fix == f'_dmarc.{zones.DOMAIN}. IN TXT "v=DMARC1; p=reject; aspf=r"'


async def test_too_many_lookups_names_the_count_and_the_limit(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    zones.VARIANTS["too_many_lookups"].breaks(dns_server)
    check = (await run(dns_server)).check("spf")
    assert "15 DNS lookups" in check.explanation
    assert "stop at 10" in check.explanation
    analysis = await analyse_spf(resolver(dns_server), zones.DOMAIN)
    assert (analysis.lookups, analysis.void_lookups, analysis.valid) == (15, 0, False)
    assert analysis.reached == [f"_spf{n}.example.org" for n in range(3)]


async def test_without_relay_settings_the_relay_cannot_be_checked(dns_server: DnsServer) -> None:
    want = zones.expected(relay_addresses=())
    zones.publish_good_zone(dns_server, zones.expected())  # the relay's address published
    check = (await run(dns_server, want)).check("spf")
    assert check.status == "warn"
    assert "could not be checked" in check.explanation
    assert check.fix is not None
    assert "MAILFLEET_RELAY_ADDRESSES" in check.fix


# -- drifting records ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(zones.DRIFTS))
async def test_a_record_that_drifts_is_caught_and_fixing_it_restores(
    dns_server: DnsServer, name: str
) -> None:
    drift, failing = zones.DRIFTS[name]
    zones.publish_good_zone(dns_server)
    assert (await run(dns_server)).state == "verified"
    drift(dns_server)
    drifted = await run(dns_server)
    assert [check.name for check in drifted.failing] == [failing]
    assert drifted.state == "failed"
    assert not drifted.temporary
    zones.publish_good_zone(dns_server)  # the operator publishes the record again
    assert (await run(dns_server)).state == "verified"


# -- DNS failures -------------------------------------------------------------------------------


async def test_a_domain_that_does_not_exist_fails_everything_as_nxdomain(
    dns_server: DnsServer,
) -> None:
    dns_server.set("other.example.com", "A", ["192.0.2.1"])  # the zone exists, the name not
    report = await run(dns_server, zones.expected(domain="gone.example.com"))
    assert {check.dns_error for check in report.checks} == {"nxdomain"}
    assert {check.status for check in report.checks} == {"fail"}
    assert all("does not exist" in check.explanation for check in report.checks)
    assert not report.temporary  # nothing to wait for: the zone must be published
    assert not any(check.temporary for check in report.checks)


@pytest.mark.parametrize(
    ("breaking", "problem"), [("servfail", "servfail"), ("silence", "timeout")]
)
@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("_dmarc.example.com", "dmarc"),
        ("mf._domainkey.example.com", "dkim:mf"),
        ("_mta-sts.example.com", "mta_sts"),
        ("_smtp._tls.example.com", "tls_rpt"),
    ],
)
async def test_a_lookup_that_fails_is_not_a_wrong_record(
    dns_server: DnsServer, breaking: str, problem: str, name: str, check: str
) -> None:
    zones.publish_good_zone(dns_server)
    getattr(dns_server, breaking)(name)
    report = await run(dns_server)
    found = report.check(check)
    assert (found.status, found.dns_error) == ("fail", problem)
    assert "not a wrong record" in found.explanation
    assert "try again" in found.explanation
    assert found.temporary
    assert [c.name for c in report.failing] == [check]
    assert report.temporary  # the only failure is the DNS's: the previous state stands


@pytest.mark.parametrize(
    ("breaking", "problem"), [("servfail", "servfail"), ("silence", "timeout")]
)
async def test_a_failed_lookup_of_the_domain_fails_its_mx_and_spf(
    dns_server: DnsServer, breaking: str, problem: str
) -> None:
    zones.publish_good_zone(dns_server)
    getattr(dns_server, breaking)(zones.DOMAIN)
    report = await run(dns_server)
    assert {c.name: c.dns_error for c in report.failing} == {"mx": problem, "spf": problem}
    assert report.temporary


async def test_a_failed_lookup_of_a_nested_include_is_a_dns_error(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    zones.VARIANTS["nested_include"].breaks(dns_server)
    dns_server.servfail("_spf.example.org")
    report = await run(dns_server)
    spf = report.check("spf")
    assert (spf.status, spf.dns_error, spf.temporary) == ("fail", "servfail", True)
    assert report.temporary
    analysis = await analyse_spf(resolver(dns_server), zones.DOMAIN)  # recorded, not raised
    assert [error.name for error in analysis.dns_errors] == ["_spf.example.org"]


async def test_a_dns_failure_beside_a_wrong_record_is_not_temporary(
    dns_server: DnsServer,
) -> None:
    zones.publish_good_zone(dns_server)
    dns_server.servfail(f"_dmarc.{zones.DOMAIN}")
    zones.VARIANTS["null_mx"].breaks(dns_server)
    report = await run(dns_server)
    assert {c.name for c in report.failing} == {"mx", "dmarc"}
    assert not report.temporary


# -- JSON ---------------------------------------------------------------------------------------


async def test_a_report_round_trips_through_json(dns_server: DnsServer) -> None:
    zones.publish_good_zone(dns_server)
    zones.VARIANTS["malformed_spf"].breaks(dns_server)
    dns_server.silence(f"_dmarc.{zones.DOMAIN}")
    report = await run(dns_server)
    data = report.as_json()
    assert set(data) == {"domain", "state", "checked_at", "checks"}
    assert data["state"] == "failed"
    assert data["checked_at"].endswith("+00:00")
    assert PreflightReport.from_json(data) == report
    for check in report.checks:
        assert Check.from_json(check.as_json()) == check
    assert report.check("dmarc").as_json()["dns_error"] == "timeout"


@pytest.mark.parametrize(
    "data",
    [
        {"name": "mx", "record": "example.com", "status": "maybe", "explanation": ""},
        {
            "name": "mx",
            "record": "example.com",
            "status": "fail",
            "explanation": "",
            "dns_error": "x",
        },
        {"name": "mx", "status": "pass", "explanation": ""},
    ],
)
def test_json_that_is_not_a_check_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        Check.from_json(data)


# -- SPF syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ("spf1 -all", "starts with v=spf1"),
        ("v=spf10 -all", "starts with v=spf1"),
        ("v=spf1 ip4:192.0.2.1/33 -all", "prefix length"),
        ("v=spf1 ip4:192.0.2 -all", "not an IPv4 address"),
        ("v=spf1 ip6:192.0.2.1 -all", "not an IPv6 address"),
        ("v=spf1 ip6:2001:db8::/129 -all", "prefix length"),
        ("v=spf1 a:example -all", "not a domain name"),
        ("v=spf1 a:example..com -all", "not a domain name"),
        ("v=spf1 include -all", "include needs a value"),
        ("v=spf1 include: -all", "nothing after the colon"),
        ("v=spf1 mx:example.com/40 -all", "CIDR"),
        ("v=spf1 exists:%{x}.example.com -all", "bad macro"),
        ("v=spf1 redirect=a.example.com redirect=b.example.com", "appears twice"),
        ("v=spf1 exp=a.example.com exp=b.example.com -all", "appears twice"),
        ("v=spf1 -all:x", "all takes no value"),
        ("v=spf1 allow -all", "unknown mechanism"),
        ("v=spf1 ~ -all", "not an SPF term"),
    ],
)
def test_spf_syntax_errors_say_what_is_wrong(record: str, says: str) -> None:
    with pytest.raises(SpfError, match=says):
        parse_spf(record)


def test_spf_terms_are_read_with_their_qualifiers_and_modifiers() -> None:
    record = parse_spf(
        "v=spf1 ip4:192.0.2.0/24 ~include:_spf.example.com mx/24 exists:%{i}.e.example.com "
        "exp=x.example.com x-custom=anything -all"
    )
    assert [(t.qualifier, t.name, t.value) for t in record.terms] == [
        ("+", "ip4", "192.0.2.0/24"),
        ("~", "include", "_spf.example.com"),
        ("+", "mx", "/24"),
        ("+", "exists", "%{i}.e.example.com"),
        ("", "exp", "x.example.com"),
        ("", "x-custom", "anything"),  # unknown modifiers are kept (RFC 7208 6)
        ("-", "all", None),
    ]
    assert record.all is not None
    assert record.all.qualifier == "-"
    assert record.redirect is None
    assert [t.name for t in record.terms if t.queries_dns] == ["include", "mx", "exists"]


async def test_spf_lookups_are_counted_as_a_receiver_evaluates_them(
    dns_server: DnsServer,
) -> None:
    dns_server.set("example.org", "A", ["198.51.100.1"])
    dns_server.set("_spf.example.org", "TXT", ["v=spf1 a:example.org mx:example.org ?all"])
    dns_server.set(
        "next.example.org", "TXT", ["v=spf1 ip4:192.0.2.1 include:_spf.example.org ~all"]
    )
    # nothing after all is evaluated, and a redirect is ignored when there is an all
    dns_server.set(
        "one.example.com", "TXT", ["v=spf1 -all a:x.example.org redirect=next.example.org"]
    )
    # a redirect's all is the domain's
    dns_server.set("two.example.com", "TXT", ["v=spf1 a:example.org redirect=next.example.org"])
    one = await analyse_spf(resolver(dns_server), "one.example.com")
    assert (one.count, one.lookups, one.all_qualifier, one.reached) == (1, 0, "-", [])
    two = await analyse_spf(resolver(dns_server), "two.example.com")
    assert two.redirect == "next.example.org"
    assert two.all_qualifier == "~"  # next's, not _spf's (an include does not terminate)
    # a, redirect, include (nested), a and mx of the include: 5; example.org has no MX: void
    assert (two.lookups, two.void_lookups, two.valid) == (5, 1, True)
    assert two.reached == ["next.example.org", "_spf.example.org"]


async def test_a_lookup_failing_while_the_relay_is_evaluated_is_a_dns_error(
    dns_server: DnsServer,
) -> None:
    """The record is fine; the address of the MX host it names cannot be looked up."""
    zones.publish_good_zone(dns_server)
    dns_server.set("example.org", "MX", [(10, "out.example.org")])
    dns_server.set(zones.DOMAIN, "TXT", ["v=spf1 mx:example.org -all"])
    dns_server.servfail("out.example.org")
    spf = (await run(dns_server)).check("spf")
    assert (spf.status, spf.dns_error, spf.temporary) == ("fail", "servfail", True)
    assert zones.RELAY in spf.explanation
    assert "not a wrong record" in spf.explanation
