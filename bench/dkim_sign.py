"""DKIM signing throughput: mailfleet's signer (OpenSSL through cryptography) against dkimpy.

1. RSA-2048, relaxed/relaxed, SHA-256: signatures per second of
   ``DkimSigner.sign`` and of dkimpy's own ``dkim.sign`` on the same message
   with the same key and the same ``h=`` list, in one run, in alternating
   slices so that load from elsewhere on the machine hits both alike.
   The ratio is ours / dkimpy. Target: >= 10.
2. Ed25519 (RFC 8463): signatures per second of ``DkimSigner.sign``.

Every figure covers the whole call: parsing, canonicalization, body and header
hashes, the private-key operation and the header layout. Before timing, one
signature of each kind is checked with dkimpy's verifier.

Usage (from the repository root)::

    .venv/bin/python bench/dkim_sign.py               # 4 s for RSA, 2 s for Ed25519
    .venv/bin/python bench/dkim_sign.py --seconds 10

Other benchmarks import :func:`measure_rsa` / :func:`measure_ed25519`. The
last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP

import dkim
from _common import emit

from mailfleet.auth.dkim import DkimKey, DkimSigner, generate_key

__all__ = ["DOMAIN", "TARGET_RSA_RATIO", "bench_message", "measure_ed25519", "measure_rsa"]

DOMAIN = "bench.example.com"
TARGET_RSA_RATIO = 10.0
_SLICES = 8  # alternating slices per implementation


def bench_message() -> bytes:
    """A typical outbound reply (about 2 KB): threading, unsubscribe and MIME headers."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = f"Support Agent <agent-0042@{DOMAIN}>"
    msg["To"] = "Customer Name <customer@example.org>"
    msg["Subject"] = "Re: Votre commande n° 12345 — suivi de la livraison"
    msg["Date"] = "Tue, 14 Nov 2023 22:13:20 +0000"
    msg["Message-ID"] = f"<20231114221320.42.abcdef@{DOMAIN}>"
    msg["In-Reply-To"] = "<CAF=abc123@mail.example.org>"
    msg["References"] = "<CAF=abc122@mail.example.org> <CAF=abc123@mail.example.org>"
    msg["List-Unsubscribe"] = f"<https://{DOMAIN}/u/abcdef>, <mailto:unsub@{DOMAIN}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-replied"
    paragraph = (
        "Thank you for your message. Your order has left our warehouse and should reach "
        "you within three working days. You can follow it with the link below.\n\n"
    )
    msg.set_content(paragraph * 6 + "-- \nSupport Agent\n")
    return msg.as_bytes()


def _rate(work: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Run ``work`` repeatedly for about ``seconds``: (calls, elapsed seconds)."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    now = start
    while now < deadline:
        work()
        count += 1
        now = time.perf_counter()
    return count, now - start


def _dnsfunc(*keys: DkimKey) -> Callable[..., bytes | None]:
    records = {f"{k.dns_name(DOMAIN)}.".encode(): k.dns_txt_value.encode() for k in keys}
    return lambda name, timeout=5: records.get(name)


def _h_list(signed: bytes) -> list[bytes]:
    """The ``h=`` list of the topmost DKIM-Signature of ``signed``."""
    headers, _ = dkim.rfc822_parse(signed)
    value = next(v for n, v in headers if n.lower() == b"dkim-signature")
    h = dkim.util.parse_tag_value(value)[b"h"]
    return [name for name in re.split(rb"\s*:\s*", h.strip())]


def measure_rsa(seconds: float) -> dict[str, float]:
    """RSA-2048 signatures/s: ours, dkimpy's, and the ratio, over about ``seconds`` in all.

    Keys: ``rsa_sign_per_s``, ``dkimpy_rsa_sign_per_s``, ``rsa_sign_ratio`` (ours / dkimpy).
    """
    message = bench_message()
    key = generate_key("rsa", selector="bench-rsa")
    signer = DkimSigner(DOMAIN, [key])
    ours = signer.sign(message)
    include = _h_list(ours)
    selector, domain, pem = key.selector.encode(), DOMAIN.encode(), key.private_pem.encode()

    def theirs() -> bytes:
        return bytes(
            dkim.sign(
                message,
                selector,
                domain,
                pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
        )

    dnsfunc = _dnsfunc(key)
    if not (
        dkim.verify(ours, dnsfunc=dnsfunc) and dkim.verify(theirs() + message, dnsfunc=dnsfunc)
    ):
        raise RuntimeError("a signature did not verify: the figures would mean nothing")

    totals = {"ours": [0, 0.0], "dkimpy": [0, 0.0]}
    slice_seconds = seconds / (2 * _SLICES)
    for _ in range(_SLICES):
        for name, work in (("ours", lambda: signer.sign(message)), ("dkimpy", theirs)):
            count, elapsed = _rate(work, slice_seconds)
            totals[name][0] += count
            totals[name][1] += elapsed
    ours_per_s = totals["ours"][0] / totals["ours"][1]
    dkimpy_per_s = totals["dkimpy"][0] / totals["dkimpy"][1]
    return {
        "rsa_sign_per_s": ours_per_s,
        "dkimpy_rsa_sign_per_s": dkimpy_per_s,
        "rsa_sign_ratio": ours_per_s / dkimpy_per_s,
    }


def measure_ed25519(seconds: float) -> dict[str, float]:
    """Ed25519 signatures/s of our signer over about ``seconds``: key ``ed25519_sign_per_s``."""
    message = bench_message()
    key = generate_key("ed25519", selector="bench-ed")
    signer = DkimSigner(DOMAIN, [key])
    if not dkim.verify(signer.sign(message), dnsfunc=_dnsfunc(key)):
        raise RuntimeError("the Ed25519 signature did not verify: the figure would mean nothing")
    count, elapsed = _rate(lambda: signer.sign(message), seconds)
    return {"ed25519_sign_per_s": count / elapsed}


def main(seconds: float) -> None:
    print(f"message: {len(bench_message()):,} bytes, relaxed/relaxed, SHA-256")
    figures = measure_rsa(seconds)
    print(
        f"RSA-2048: mailfleet {figures['rsa_sign_per_s']:,.0f} signatures/s, "
        f"dkimpy {figures['dkimpy_rsa_sign_per_s']:,.0f} signatures/s, "
        f"ratio {figures['rsa_sign_ratio']:.1f} (target >= {TARGET_RSA_RATIO:.0f})"
    )
    if figures["rsa_sign_ratio"] < TARGET_RSA_RATIO:
        print(f"RSA ratio is below the target of {TARGET_RSA_RATIO:.0f}")
    figures.update(measure_ed25519(seconds / 2))
    print(f"Ed25519: mailfleet {figures['ed25519_sign_per_s']:,.0f} signatures/s")
    emit(figures)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="time for RSA (Ed25519 gets half)"
    )
    main(parser.parse_args().seconds)
