"""Sender authentication: DKIM signing of outbound mail, and the DNS lookups it rests on
(SPF/DMARC audits to come).

Imports only :mod:`mailfleet.model`; the runtime decides where the CPU work runs.
"""

from .dkim import (
    DEFAULT_OVERSIGNED_HEADERS,
    DEFAULT_SIGNED_HEADERS,
    DkimAlgorithm,
    DkimKey,
    DkimSigner,
    generate_key,
)
from .dns import DkimDnsFunc, DnsSettings, Resolver

__all__ = [
    "DEFAULT_OVERSIGNED_HEADERS",
    "DEFAULT_SIGNED_HEADERS",
    "DkimAlgorithm",
    "DkimDnsFunc",
    "DkimKey",
    "DkimSigner",
    "DnsSettings",
    "Resolver",
    "generate_key",
]
