"""Test zones for domain authentication: one correct zone and its broken variants.

``publish_good_zone(server, expected)`` serves every record a verified domain
needs for an :class:`~mailfleet.auth.preflight.Expected` (by default
:func:`expected`: example.com, its MX at mx.example.net, the relay at
192.0.2.25, one RSA and one Ed25519 key). Each entry of ``VARIANTS`` breaks
that zone in one way (missing, duplicated, malformed, too-many-lookups,
misaligned, null-MX...) and names the check that must notice and what it
must answer; each entry of ``DRIFTS`` changes a record of a zone that passed
once (a drifting record, as an audit finds it).

The records are written here from the expectation, not by the code under
test, so a mistake in what mailfleet prints cannot hide the same mistake
in what it checks.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from dnsserver import DnsServer
from mailfleet.auth.dkim import DkimKey, generate_key
from mailfleet.auth.preflight import Expected

DOMAIN = "example.com"
MX_HOST = "mx.example.net"
RELAY = "192.0.2.25"
BOUNCES = f"bounces.{DOMAIN}"
GOOD_SPF = f"v=spf1 ip4:{RELAY} -all"
GOOD_DMARC = "v=DMARC1; p=reject; adkim=r; aspf=r"
UNRELATED_TXT = "google-site-verification=abc"

Breaks = Callable[[DnsServer], None]


@functools.cache
def keys() -> tuple[DkimKey, DkimKey]:
    """One RSA-2048 and one Ed25519 key (RSA is slow to make: once per session)."""
    return generate_key("rsa", selector="mf"), generate_key("ed25519", selector="mf-ed")


def expected(**changes: object) -> Expected:
    """The expectation of the test domain, with ``changes`` to its fields."""
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
    if "domain" in changes and "envelope_domain" not in changes:
        values["envelope_domain"] = values["domain"]
    return Expected(**values)  # type: ignore[arg-type]


def spf_for(want: Expected) -> str:
    """The SPF record authorising ``want``'s relay: its addresses, its include, ``-all``."""
    terms = [f"ip{ipaddress.ip_address(ip).version}:{ip}" for ip in want.relay_addresses]
    if want.spf_include:
        terms.append(f"include:{want.spf_include}")
    return " ".join(["v=spf1", *(terms or ["mx"]), "-all"])


def publish_good_zone(
    server: DnsServer, want: Expected | None = None, *, advised: bool = True
) -> Expected:
    """Serve every record a verified ``want.domain`` needs (and, with ``advised``, its
    MTA-STS and TLS-RPT records); answers the expectation used."""
    want = want or expected()
    domain, envelope = want.domain, want.envelope_domain or want.domain
    spf = spf_for(want)
    server.set(domain, "MX", [(10, want.mx_hosts[0])])
    server.set(domain, "TXT", [spf, UNRELATED_TXT])  # an unrelated TXT is no SPF record
    if want.spf_include:  # the relay's own record, reached through the include
        relay = Expected(want.spf_include, want.mx_hosts, want.relay_addresses)
        server.set(want.spf_include, "TXT", [spf_for(relay) if relay.relay_addresses else GOOD_SPF])
    for selector, value in want.dkim:
        server.set(f"{selector}._domainkey.{domain}", "TXT", [value])
    server.set(f"_dmarc.{domain}", "TXT", [GOOD_DMARC])
    if envelope != domain:
        server.set(envelope, "MX", [(10, want.mx_hosts[0])])
        server.set(envelope, "TXT", [spf])
    if advised:
        server.set(f"_mta-sts.{domain}", "TXT", ["v=STSv1; id=20261202"])
        server.set(f"_smtp._tls.{domain}", "TXT", [f"v=TLSRPTv1; rua=mailto:tls@{domain}"])
    return want


def _txt(name: str, *records: str) -> Breaks:
    return lambda server: server.set(name, "TXT", list(records))


def _spf(*records: str) -> Breaks:
    return _txt(DOMAIN, *records)


def _dmarc(*records: str) -> Breaks:
    return _txt(f"_dmarc.{DOMAIN}", *records)


def _dkim(selector: str, *records: str) -> Breaks:
    return _txt(f"{selector}._domainkey.{DOMAIN}", *records)


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


def _void_lookups(server: DnsServer) -> None:
    """Three a: terms naming hosts that do not exist (in a zone that does)."""
    server.set("example.org", "A", ["198.51.100.7"])
    names = " ".join(f"a:gone{n}.example.org" for n in range(3))
    server.set(DOMAIN, "TXT", [f"v=spf1 ip4:{RELAY} {names} -all"])


def _nested_ok(server: DnsServer) -> None:
    server.set("_spf.example.org", "TXT", [f"v=spf1 ip4:{RELAY} -all"])
    server.set(DOMAIN, "TXT", ["v=spf1 include:_spf.example.org -all"])


def _include_without_spf(server: DnsServer) -> None:
    server.set("_spf.example.org", "TXT", ["not an spf record"])
    server.set(DOMAIN, "TXT", [f"v=spf1 ip4:{RELAY} include:_spf.example.org -all"])


def _redirect(final: str) -> Breaks:
    def breaks(server: DnsServer) -> None:
        server.set("_spf.example.org", "TXT", [f"v=spf1 ip4:{RELAY} {final}"])
        server.set(DOMAIN, "TXT", ["v=spf1 redirect=_spf.example.org"])

    return breaks


def _other_dkim_key(server: DnsServer) -> None:
    other = generate_key("ed25519", selector="mf-ed")
    server.set(f"mf-ed._domainkey.{DOMAIN}", "TXT", [other.dns_txt_value])


def _dkim_tags(selector: str, extra: str, *, keep_ours: bool = False) -> Breaks:
    """Our own record at ``selector`` with ``extra`` tags appended (and, with
    ``keep_ours``, next to our record as published: two records)."""

    def breaks(server: DnsServer) -> None:
        ours = dict(expected().dkim)[selector]
        records = [ours, f"{ours}; {extra}"] if keep_ours else [f"{ours}; {extra}"]
        server.set(f"{selector}._domainkey.{DOMAIN}", "TXT", records)

    return breaks


def _dkim_wrong_k(server: DnsServer) -> None:
    rsa = keys()[0]
    server.set(f"mf._domainkey.{DOMAIN}", "TXT", [rsa.dns_txt_value.replace("k=rsa", "k=ed25519")])


def _dmarc_at_organizational_domain(server: DnsServer) -> None:
    server.remove(f"_dmarc.mail.{DOMAIN}")
    server.set(f"_dmarc.{DOMAIN}", "TXT", [GOOD_DMARC])


@dataclass(frozen=True)
class Variant:
    """A way the zone is broken, the check that must notice, and its answer.

    ``expected`` changes the expectation (and so the zone published before
    ``breaks``); ``spf_valid`` / ``dmarc_valid`` say whether the domain's SPF
    and DMARC records are valid in RFC terms (what checkdmarc judges), when
    the variant is about them.
    """

    breaks: Breaks
    check: str
    status: str
    says: str
    expected: dict[str, object] = field(default_factory=dict)
    spf_valid: bool | None = None
    dmarc_valid: bool | None = None

    @property
    def want(self) -> Expected:
        """The expectation the zone is published for and checked against."""
        return expected(**self.expected)


_BOUNCES = {"envelope_domain": BOUNCES}

VARIANTS: dict[str, Variant] = {
    # -- correct ------------------------------------------------------------------------------
    "correct": Variant(
        lambda server: None, "spf", "pass", "authorised", spf_valid=True, dmarc_valid=True
    ),
    "nested_include": Variant(_nested_ok, "spf", "pass", "1 of 10 lookups", spf_valid=True),
    "relay_include": Variant(
        lambda server: None,
        "spf",
        "pass",
        "authorised",
        expected={"spf_include": "_spf.relay.example.org"},
        spf_valid=True,
    ),
    "redirect": Variant(_redirect("-all"), "spf", "pass", "1 of 10 lookups", spf_valid=True),
    "mx_in_capitals": Variant(
        lambda s: s.set(DOMAIN, "MX", [(10, "MX.Example.NET.")]), "mx", "pass", MX_HOST
    ),
    "bounce_domain": Variant(
        lambda server: None, "bounce_spf", "pass", "authorised", expected=_BOUNCES
    ),
    "dmarc_at_organizational_domain": Variant(
        _dmarc_at_organizational_domain,
        "dmarc",
        "pass",
        "organizational domain example.com",
        expected={"domain": f"mail.{DOMAIN}"},
        dmarc_valid=True,
    ),
    # -- missing ------------------------------------------------------------------------------
    "missing_mx": Variant(lambda s: s.remove(DOMAIN, "MX"), "mx", "fail", "no MX record"),
    "missing_spf": Variant(_spf(UNRELATED_TXT), "spf", "fail", "no SPF record", spf_valid=False),
    "missing_dkim": Variant(
        lambda s: s.remove(f"mf._domainkey.{DOMAIN}"), "dkim:mf", "fail", "no DKIM record"
    ),
    "missing_dmarc": Variant(
        lambda s: s.remove(f"_dmarc.{DOMAIN}"),
        "dmarc",
        "fail",
        "no DMARC record",
        dmarc_valid=False,
    ),
    "missing_mta_sts": Variant(
        lambda s: s.remove(f"_mta-sts.{DOMAIN}"), "mta_sts", "warn", "no MTA-STS record"
    ),
    "missing_tls_rpt": Variant(
        lambda s: s.remove(f"_smtp._tls.{DOMAIN}"), "tls_rpt", "warn", "no TLS-RPT record"
    ),
    "missing_bounce_mx": Variant(
        lambda s: s.remove(BOUNCES, "MX"), "bounce_mx", "fail", "no MX record", _BOUNCES
    ),
    "missing_bounce_spf": Variant(
        lambda s: s.remove(BOUNCES, "TXT"), "bounce_spf", "fail", "no SPF record", _BOUNCES
    ),
    "include_missing": Variant(
        _spf(GOOD_SPF),
        "spf",
        "fail",
        "does not include _spf.relay",
        expected={"spf_include": "_spf.relay.example.org"},
    ),
    "include_without_spf": Variant(
        _include_without_spf, "spf", "fail", "has no SPF record", spf_valid=False
    ),
    # -- duplicated ---------------------------------------------------------------------------
    "duplicated_spf": Variant(
        _spf(GOOD_SPF, "v=spf1 mx -all"), "spf", "fail", "2 SPF records", spf_valid=False
    ),
    "duplicated_dkim": Variant(
        _dkim_tags("mf-ed", "t=s", keep_ours=True), "dkim:mf-ed", "fail", "2 DKIM records"
    ),
    "duplicated_dmarc": Variant(
        _dmarc(GOOD_DMARC, "v=DMARC1; p=none"),
        "dmarc",
        "fail",
        "2 DMARC records",
        dmarc_valid=False,
    ),
    # -- malformed ----------------------------------------------------------------------------
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
    "no_all": Variant(
        _spf(f"v=spf1 ip4:{RELAY}"), "spf", "fail", "no terminating all", spf_valid=True
    ),
    "plus_all": Variant(_spf(f"v=spf1 ip4:{RELAY} +all"), "spf", "fail", "+all", spf_valid=True),
    "redirect_to_plus_all": Variant(_redirect("+all"), "spf", "fail", "+all", spf_valid=True),
    "question_all": Variant(
        _spf(f"v=spf1 ip4:{RELAY} ?all"), "spf", "warn", "?all", spf_valid=True
    ),
    "relay_not_authorised": Variant(
        _spf("v=spf1 ip4:198.51.100.1 -all"),
        "spf",
        "fail",
        f"{RELAY} gets SPF fail",
        spf_valid=True,
    ),
    "bounce_relay_not_authorised": Variant(
        _txt(BOUNCES, "v=spf1 ip4:198.51.100.1 -all"),
        "bounce_spf",
        "fail",
        f"{RELAY} gets SPF fail",
        _BOUNCES,
    ),
    "malformed_dkim": Variant(
        _dkim("mf-ed", "v=DKIM1; k=ed25519; p=not*base64"), "dkim:mf-ed", "fail", "not base64"
    ),
    "dkim_tag_twice": Variant(
        _dkim_tags("mf-ed", "k=ed25519"), "dkim:mf-ed", "fail", "does not parse"
    ),
    "dkim_wrong_k": Variant(_dkim_wrong_k, "dkim:mf", "fail", "k=ed25519"),
    "dkim_not_for_email": Variant(
        _dkim_tags("mf-ed", "s=tlsrpt"), "dkim:mf-ed", "fail", "does not allow email"
    ),
    "other_dkim_key": Variant(_other_dkim_key, "dkim:mf-ed", "fail", "not ours"),
    "revoked_dkim": Variant(_dkim("mf", "v=DKIM1; k=rsa; p="), "dkim:mf", "fail", "revoked"),
    "testing_dkim": Variant(_dkim_tags("mf-ed", "t=y"), "dkim:mf-ed", "warn", "testing mode"),
    "malformed_dmarc": Variant(
        _dmarc("v=DMARC1; p=sometimes"), "dmarc", "fail", "p=sometimes", dmarc_valid=False
    ),
    "dmarc_bad_tags": Variant(
        _dmarc("v=DMARC1; p=reject; aspf=x"), "dmarc", "fail", "aspf=x", dmarc_valid=False
    ),
    "malformed_mta_sts": Variant(
        _txt(f"_mta-sts.{DOMAIN}", "v=STSv1"), "mta_sts", "warn", "no id= tag"
    ),
    # -- too many lookups ---------------------------------------------------------------------
    "too_many_lookups": Variant(
        _too_many_lookups, "spf", "fail", "15 DNS lookups", spf_valid=False
    ),
    "void_lookups": Variant(
        _void_lookups, "spf", "fail", "3 of its lookups find nothing", spf_valid=False
    ),
    # -- misaligned ---------------------------------------------------------------------------
    "misaligned": Variant(
        _dmarc("v=DMARC1; p=reject; aspf=s"),
        "dmarc",
        "warn",
        "SPF cannot align",
        expected=_BOUNCES,
        dmarc_valid=True,
    ),
    "misaligned_envelope_elsewhere": Variant(
        lambda server: None,
        "dmarc",
        "warn",
        "SPF cannot align",
        expected={"envelope_domain": "bounces.example.org"},
        dmarc_valid=True,
    ),
    # -- null MX, MX elsewhere ----------------------------------------------------------------
    "null_mx": Variant(lambda s: s.set(DOMAIN, "MX", [(0, ".")]), "mx", "fail", "null MX"),
    "mx_elsewhere": Variant(
        lambda s: s.set(DOMAIN, "MX", [(10, "mx.example.org")]),
        "mx",
        "fail",
        "not at the fleet's MX host",
    ),
    "bounce_null_mx": Variant(
        lambda s: s.set(BOUNCES, "MX", [(0, ".")]), "bounce_mx", "fail", "null MX", _BOUNCES
    ),
}


DRIFTS: dict[str, tuple[Breaks, str]] = {
    # a record of a zone that passed, changed since: the change and the check that fails
    "spf_relay_dropped": (_spf("v=spf1 ip4:198.51.100.9 -all"), "spf"),
    "spf_duplicated": (_spf(GOOD_SPF, "v=spf1 a -all"), "spf"),
    "dkim_key_replaced": (_other_dkim_key, "dkim:mf-ed"),
    "dkim_removed": (lambda s: s.remove(f"mf._domainkey.{DOMAIN}"), "dkim:mf"),
    "dmarc_removed": (lambda s: s.remove(f"_dmarc.{DOMAIN}"), "dmarc"),
    "mx_moved": (lambda s: s.set(DOMAIN, "MX", [(10, "mx.example.org")]), "mx"),
    "mx_nulled": (lambda s: s.set(DOMAIN, "MX", [(0, ".")]), "mx"),
}
