"""Sender authentication: DKIM signing of outbound mail (SPF/DMARC audits to come).

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

__all__ = [
    "DEFAULT_OVERSIGNED_HEADERS",
    "DEFAULT_SIGNED_HEADERS",
    "DkimAlgorithm",
    "DkimKey",
    "DkimSigner",
    "generate_key",
]
