"""The DNS records a sending domain publishes, and what preflight expects of them.

:func:`records_to_publish` lists them for one domain: its MX (the fleet's
MX host), SPF (the relay's addresses and include), one DKIM record per key,
DMARC, the MX and SPF of the envelope (VERP) domain when it is not the
domain itself, and the advised MTA-STS and TLS-RPT records. :func:`expected`
turns the same inputs into the :class:`~mailfleet.auth.preflight.Expected`
that preflight checks the published zone against, so what is printed and
what is checked cannot drift apart.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailfleet.model.records import DnsRecord

from .preflight import Expected
from .spf import spf_value

__all__ = ["DomainSetup", "expected", "records_to_publish"]

MX_PREFERENCE = 10


@dataclass(frozen=True, slots=True)
class DomainSetup:
    """What the fleet needs of one domain's DNS.

    ``dkim`` holds ``(selector, TXT value)`` for every published key;
    ``relay_addresses`` the IPs or networks the relay sends from;
    ``envelope_domain`` the MAIL FROM domain (``domain`` unless a bounce
    domain is set).
    """

    domain: str
    mx_host: str
    dkim: tuple[tuple[str, str], ...]
    relay_addresses: tuple[str, ...] = ()
    spf_include: str | None = None
    envelope_domain: str = ""
    dmarc_policy: str = "none"
    created_at: datetime | None = None

    @property
    def envelope(self) -> str:
        """The envelope domain, the domain itself when none is set."""
        return self.envelope_domain or self.domain


def records_to_publish(setup: DomainSetup) -> list[DnsRecord]:
    """Every record ``setup.domain`` should publish, required ones first."""
    domain, envelope = setup.domain, setup.envelope
    spf = spf_value(setup.relay_addresses, setup.spf_include)
    mx = f"{MX_PREFERENCE} {setup.mx_host}"
    records = [
        DnsRecord(domain, mx, "MX", "mx"),
        DnsRecord(domain, spf, "TXT", "spf"),
        *(
            DnsRecord(f"{selector}._domainkey.{domain}", value, "TXT", f"dkim:{selector}")
            for selector, value in setup.dkim
        ),
        DnsRecord(f"_dmarc.{domain}", _dmarc_value(setup.dmarc_policy), "TXT", "dmarc"),
    ]
    if envelope != domain:
        records.append(DnsRecord(envelope, mx, "MX", "bounce_mx"))
        records.append(DnsRecord(envelope, spf, "TXT", "bounce_spf"))
    stamp = (setup.created_at or datetime(2026, 1, 1)).strftime("%Y%m%d")
    records.append(DnsRecord(f"_mta-sts.{domain}", f"v=STSv1; id={stamp}", "TXT", "mta_sts", False))
    records.append(
        DnsRecord(
            f"_smtp._tls.{domain}",
            f"v=TLSRPTv1; rua=mailto:tls-reports@{domain}",
            "TXT",
            "tls_rpt",
            False,
        )
    )
    return records


def expected(setup: DomainSetup, relay_addresses: Sequence[str] | None = None) -> Expected:
    """What preflight checks the zone of ``setup.domain`` against.

    ``relay_addresses`` (single IPs to try against SPF) defaults to the
    single addresses among ``setup.relay_addresses``; a network is tried
    through its first address.
    """
    if relay_addresses is None:
        relay_addresses = [
            str(ipaddress.ip_network(entry, strict=False).network_address)
            for entry in setup.relay_addresses
        ]
    return Expected(
        domain=setup.domain,
        mx_hosts=(setup.mx_host,),
        relay_addresses=tuple(relay_addresses),
        spf_include=setup.spf_include,
        dkim=setup.dkim,
        envelope_domain=setup.envelope,
    )


def _dmarc_value(policy: str) -> str:
    return f"v=DMARC1; p={policy}; adkim=r; aspf=r"
