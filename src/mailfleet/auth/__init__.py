"""Sender authentication: DKIM signing of outbound mail, the DNS lookups it rests on, and the
preflight of a sending domain's records (SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT).

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
from .preflight import (
    Check,
    CheckStatus,
    DnsProblem,
    Expected,
    PreflightCheck,
    PreflightReport,
    preflight,
)
from .spf import SpfAnalysis, SpfError, SpfRecord, SpfTerm, analyse_spf, parse_spf

__all__ = [
    "DEFAULT_OVERSIGNED_HEADERS",
    "DEFAULT_SIGNED_HEADERS",
    "Check",
    "CheckStatus",
    "DkimAlgorithm",
    "DkimDnsFunc",
    "DkimKey",
    "DkimSigner",
    "DnsProblem",
    "DnsSettings",
    "Expected",
    "PreflightCheck",
    "PreflightReport",
    "Resolver",
    "SpfAnalysis",
    "SpfError",
    "SpfRecord",
    "SpfTerm",
    "analyse_spf",
    "generate_key",
    "parse_spf",
    "preflight",
]
