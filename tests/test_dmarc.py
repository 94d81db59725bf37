"""DMARC records, their lookup over the loopback DNS server, and alignment."""

from __future__ import annotations

import pytest

from dnsserver import DnsServer
from mailfleet.auth.dmarc import (
    DmarcError,
    aligned,
    lookup_dmarc,
    organizational_domain,
    parse_dmarc,
)
from mailfleet.auth.dns import Resolver
from mailfleet.model.errors import DnsServerFailure

pytestmark = pytest.mark.anyio


def test_a_minimal_record_gets_the_defaults() -> None:
    record = parse_dmarc("v=DMARC1; p=reject")
    assert (record.policy, record.subdomain_policy) == ("reject", "reject")
    assert (record.adkim, record.aspf, record.pct) == ("r", "r", 100)
    assert record.rua == ()


def test_every_tag_is_read() -> None:
    record = parse_dmarc(
        "v=DMARC1;p=quarantine; sp=none; adkim=s; aspf=S; pct=20; "
        "rua=mailto:a@example.net,mailto:b@example.net; ruf=mailto:f@example.net; "
        "fo=1:d; rf=afrf; ri=86400; np=reject"
    )
    assert (record.policy, record.subdomain_policy) == ("quarantine", "none")
    assert (record.adkim, record.aspf, record.pct) == ("s", "s", 20)
    assert record.rua == ("mailto:a@example.net", "mailto:b@example.net")
    assert record.ruf == ("mailto:f@example.net",)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p=reject; v=DMARC1", "starts with v=DMARC1"),
        ("v=DMARC2; p=reject", "starts with v=DMARC1"),
        ("v=DMARC1; adkim=r", "p= tag"),
        ("v=DMARC1; p=block", "p=block is not a policy"),
        ("v=DMARC1; p=none; sp=maybe", "sp=maybe"),
        ("v=DMARC1; p=none; adkim=x", "adkim=x"),
        ("v=DMARC1; p=none; pct=101", "pct=101"),
        ("v=DMARC1; p=none; pct=ten", "pct=ten"),
        ("v=DMARC1; p=none; rua=reports@example.net", "not a URI"),
        ("v=DMARC1; p=none; p=reject", "appears twice"),
        ("v=DMARC1; p=none; junk", "not a tag=value"),
        ("v=DMARC1; p=none; fo=2", "fo=2"),
        ("v=DMARC1; p=none; ri=daily", "ri=daily"),
    ],
)
def test_a_wrong_record_says_which_tag(text: str, says: str) -> None:
    with pytest.raises(DmarcError, match=says.replace("=", "=").replace("(", r"\(")):
        parse_dmarc(text)


def test_organizational_domains_follow_the_public_suffix_list() -> None:
    assert organizational_domain("mail.example.co.uk") == "example.co.uk"
    assert organizational_domain("a.b.example.net") == "example.net"
    assert organizational_domain("Example.COM.") == "example.com"
    assert organizational_domain("github.io") == "github.io"  # a public suffix


def test_alignment_relaxed_and_strict() -> None:
    assert aligned("bounces.example.net", "example.net", "r")
    assert not aligned("bounces.example.net", "example.net", "s")
    assert aligned("EXAMPLE.net", "example.net", "s")
    assert not aligned("example.org", "example.net", "r")


async def test_the_domains_own_record_is_found(dns_server: DnsServer) -> None:
    dns_server.set("_dmarc.example.net", "TXT", ["v=DMARC1; p=quarantine"])
    found = await lookup_dmarc(Resolver([dns_server.address], timeout=2), "example.net")
    assert found.record is not None
    assert found.policy == "quarantine"
    assert (found.name, found.problem) == ("_dmarc.example.net", None)


async def test_a_subdomain_falls_back_to_the_organizational_domain(
    dns_server: DnsServer,
) -> None:
    dns_server.set("_dmarc.example.net", "TXT", ["v=DMARC1; p=reject; sp=quarantine"])
    dns_server.set("_dmarc.example.net", "TXT", ["v=DMARC1; p=reject; sp=quarantine"])
    found = await lookup_dmarc(Resolver([dns_server.address], timeout=2), "news.example.net")
    assert found.record_domain == "example.net"
    assert found.policy == "quarantine"


async def test_other_txt_records_are_not_dmarc_and_two_dmarc_records_are_none(
    dns_server: DnsServer,
) -> None:
    resolver = Resolver([dns_server.address], timeout=2)
    dns_server.set(
        "_dmarc.one.example.org", "TXT", ["google-site-verification=x", "v=DMARC1; p=none"]
    )
    assert (await lookup_dmarc(resolver, "one.example.org")).policy == "none"
    dns_server.set("_dmarc.two.example.org", "TXT", ["v=DMARC1; p=none", "v=DMARC1; p=reject"])
    two = await lookup_dmarc(resolver, "two.example.org")
    assert two.record is None
    assert two.problem is not None
    assert "2 DMARC records" in two.problem


async def test_missing_and_malformed_records_are_problems_not_errors(
    dns_server: DnsServer,
) -> None:
    resolver = Resolver([dns_server.address], timeout=2)
    dns_server.set("example.net", "A", ["192.0.2.1"])
    missing = await lookup_dmarc(resolver, "example.net")
    assert missing.record is None
    assert missing.problem == "no DMARC record at _dmarc.example.net"
    dns_server.set("_dmarc.bad.example.org", "TXT", ["v=DMARC1; p=sometimes"])
    bad = await lookup_dmarc(resolver, "bad.example.org")
    assert bad.problem is not None
    assert "p=sometimes" in bad.problem


async def test_a_failing_server_is_not_a_missing_record(dns_server: DnsServer) -> None:
    dns_server.set("example.net", "A", ["192.0.2.1"])
    dns_server.servfail("_dmarc.example.net")
    with pytest.raises(DnsServerFailure):
        await lookup_dmarc(Resolver([dns_server.address], timeout=2), "example.net")
