"""Test zones for domain authentication: one correct zone and its broken variants.

``publish_good_zone`` serves every record a verified domain needs; each entry
of ``VARIANTS`` breaks it in one way (missing, duplicated, malformed,
too-many-lookups, misaligned, null-MX...) and names the check that must
notice and what it must answer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from dnsserver import DnsServer
from mailfleet.auth.dkim import DkimKey, generate_key
from mailfleet.auth.preflight import Expected

DOMAIN = "example.com"
MX_HOST = "mx.example.net"
RELAY = "192.0.2.25"
GOOD_SPF = f"v=spf1 ip4:{RELAY} -all"
GOOD_DMARC = "v=DMARC1; p=reject; adkim=r; aspf=r"


@functools.cache
def keys() -> tuple[DkimKey, DkimKey]:
    """One RSA-2048 and one Ed25519 key (RSA is slow to make: once per session)."""
    return generate_key("rsa", selector="mf"), generate_key("ed25519", selector="mf-ed")


def expected(**changes: object) -> Expected:
    rsa, ed = keys()
    values: dict[str, object] = {
        "domain": DOMAIN,
        "mx_hosts": (MX_HOST,),
        "relay_addresses": (RELAY,),
        "spf_include": None,
        "dkim": ((rsa.selector, rsa.dns_txt_value), (ed.selector, ed.dns_txt_value)),
        "envelope_domain": DOMAIN,
        **changes,
    }
    return Expected(**values)  # type: ignore[arg-type]


def publish_good_zone(server: DnsServer, domain: str = DOMAIN) -> None:
    """Every record a verified ``domain`` needs, as the fleet prints them."""
    rsa, ed = keys()
    server.set(domain, "MX", [(10, MX_HOST)])
    server.set(domain, "TXT", [GOOD_SPF, "google-site-verification=abc"])
    server.set(f"{rsa.selector}._domainkey.{domain}", "TXT", [rsa.dns_txt_value])
    server.set(f"{ed.selector}._domainkey.{domain}", "TXT", [ed.dns_txt_value])
    server.set(f"_dmarc.{domain}", "TXT", [GOOD_DMARC])
    server.set(f"_mta-sts.{domain}", "TXT", ["v=STSv1; id=20261202"])
    server.set(f"_smtp._tls.{domain}", "TXT", [f"v=TLSRPTv1; rua=mailto:tls@{domain}"])


def _spf(*records: str) -> Callable[[DnsServer], None]:
    return lambda server: server.set(DOMAIN, "TXT", list(records))


def _dmarc(*records: str) -> Callable[[DnsServer], None]:
    return lambda server: server.set(f"_dmarc.{DOMAIN}", "TXT", list(records))


def _too_many_lookups(server: DnsServer) -> None:
    """Three includes, nested, of 4 a: terms each: 3 + 12 lookups."""
    includes = []
    for n in range(3):
        name = f"_spf{n}.example.org"
        server.set(
            name,
            "TXT",
            ["v=spf1 " + " ".join(f"a:h{n}{m}.example.org" for m in range(4)) + " ?all"],
        )
        for m in range(4):
            server.set(f"h{n}{m}.example.org", "A", [f"198.51.100.{n * 10 + m}"])
        includes.append(f"include:{name}")
    server.set(DOMAIN, "TXT", [f"v=spf1 ip4:{RELAY} " + " ".join(includes) + " -all"])


def _nested_ok(server: DnsServer) -> None:
    server.set("_spf.example.org", "TXT", [f"v=spf1 ip4:{RELAY} -all"])
    server.set(DOMAIN, "TXT", ["v=spf1 include:_spf.example.org -all"])


def _misaligned(server: DnsServer) -> None:
    """Strict SPF alignment, with mail leaving from a bounce subdomain."""
    server.set(f"_dmarc.{DOMAIN}", "TXT", ["v=DMARC1; p=reject; aspf=s"])
    server.set(f"bounces.{DOMAIN}", "MX", [(10, MX_HOST)])
    server.set(f"bounces.{DOMAIN}", "TXT", [GOOD_SPF])


def _other_dkim_key(server: DnsServer) -> None:
    other = generate_key("ed25519", selector="mf-ed")
    server.set(f"mf-ed._domainkey.{DOMAIN}", "TXT", [other.dns_txt_value])


@dataclass(frozen=True)
class Variant:
    """A way the zone is broken, the check that must notice, and its answer."""

    breaks: Callable[[DnsServer], None]
    check: str
    status: str
    says: str
    expected: dict[str, object] = field(default_factory=dict)
    spf_valid: bool | None = None  # what checkdmarc says of the SPF record, when it is the point
    dmarc_valid: bool | None = None


VARIANTS: dict[str, Variant] = {
    "correct": Variant(
        lambda server: None, "spf", "pass", "authorised", spf_valid=True, dmarc_valid=True
    ),
    "missing_mx": Variant(lambda s: s.remove(DOMAIN, "MX"), "mx", "fail", "no MX record"),
    "null_mx": Variant(lambda s: s.set(DOMAIN, "MX", [(0, ".")]), "mx", "fail", "null MX"),
    "mx_elsewhere": Variant(
        lambda s: s.set(DOMAIN, "MX", [(10, "mx.example.org")]),
        "mx",
        "fail",
        "not at the fleet's MX host",
    ),
    "missing_spf": Variant(
        _spf("google-site-verification=abc"), "spf", "fail", "no SPF record", spf_valid=False
    ),
    "duplicated_spf": Variant(
        _spf(GOOD_SPF, "v=spf1 mx -all"), "spf", "fail", "2 SPF records", spf_valid=False
    ),
    "malformed_spf": Variant(
        _spf(f"v=spf1 ip4:{RELAY} ip4:192.0.2.300 -all"),
        "spf",
        "fail",
        "is not an IPv4 address",
        spf_valid=False,
    ),
    "unknown_mechanism": Variant(
        _spf(f"v=spf1 ip4:{RELAY} allow:everyone -all"),
        "spf",
        "fail",
        "unknown mechanism",
        spf_valid=False,
    ),
    "too_many_lookups": Variant(
        _too_many_lookups, "spf", "fail", "15 DNS lookups", spf_valid=False
    ),
    "nested_include": Variant(_nested_ok, "spf", "pass", "1 of 10 lookups", spf_valid=True),
    "no_all": Variant(_spf(f"v=spf1 ip4:{RELAY}"), "spf", "fail", "no terminating all"),
    "plus_all": Variant(_spf(f"v=spf1 ip4:{RELAY} +all"), "spf", "fail", "+all"),
    "relay_not_authorised": Variant(
        _spf("v=spf1 ip4:198.51.100.1 -all"),
        "spf",
        "fail",
        f"{RELAY} gets SPF fail",
        spf_valid=True,
    ),
    "include_missing": Variant(
        lambda s: None,
        "spf",
        "fail",
        "does not include _spf.relay",
        expected={"spf_include": "_spf.relay.example.org"},
    ),
    "missing_dkim": Variant(
        lambda s: s.remove(f"mf._domainkey.{DOMAIN}"), "dkim:mf", "fail", "no DKIM record"
    ),
    "other_dkim_key": Variant(_other_dkim_key, "dkim:mf-ed", "fail", "not ours"),
    "revoked_dkim": Variant(
        lambda s: s.set(f"mf._domainkey.{DOMAIN}", "TXT", ["v=DKIM1; k=rsa; p="]),
        "dkim:mf",
        "fail",
        "revoked",
    ),
    "testing_dkim": Variant(
        lambda s: s.set(f"mf-ed._domainkey.{DOMAIN}", "TXT", [keys()[1].dns_txt_value + "; t=y"]),
        "dkim:mf-ed",
        "warn",
        "testing mode",
    ),
    "missing_dmarc": Variant(
        lambda s: s.remove(f"_dmarc.{DOMAIN}"),
        "dmarc",
        "fail",
        "no DMARC record",
        dmarc_valid=False,
    ),
    "duplicated_dmarc": Variant(
        _dmarc(GOOD_DMARC, "v=DMARC1; p=none"),
        "dmarc",
        "fail",
        "2 DMARC records",
        dmarc_valid=False,
    ),
    "malformed_dmarc": Variant(
        _dmarc("v=DMARC1; p=sometimes"), "dmarc", "fail", "p=sometimes", dmarc_valid=False
    ),
    "misaligned": Variant(
        _misaligned,
        "dmarc",
        "warn",
        "SPF cannot align",
        expected={"envelope_domain": f"bounces.{DOMAIN}"},
        dmarc_valid=True,
    ),
    "missing_mta_sts": Variant(
        lambda s: s.remove(f"_mta-sts.{DOMAIN}"), "mta_sts", "warn", "no MTA-STS record"
    ),
    "missing_tls_rpt": Variant(
        lambda s: s.remove(f"_smtp._tls.{DOMAIN}"), "tls_rpt", "warn", "no TLS-RPT record"
    ),
}
