"""Small helpers shared by the tests."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import Result

from dnsserver import DnsServer
from mailfleet import Domain, Fleet
from mailfleet.auth.dns import DkimDnsFunc, Resolver
from mailfleet.model.records import DnsRecord


async def wait_until(condition: Callable[[], bool], *, within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail the test after ``within`` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the condition is plain state, not an event
            await anyio.sleep(0.01)


async def wait_for_events(fleet: Any, kind: str, *, count: int = 1, within: float = 20.0) -> None:
    """Wait until the fleet's outbox holds ``count`` events of type ``kind``."""
    with anyio.fail_after(within):
        while len(await fleet.events(type=kind, limit=10_000)) < count:  # noqa: ASYNC110
            await anyio.sleep(0.02)


def publish(server: DnsServer, records: Iterable[DnsRecord]) -> None:
    """Serve ``records`` (as ``fleet.domain_records`` gives them) from ``server``; the
    records of one name and type are published together, replacing what was there."""
    grouped: dict[tuple[str, str], list[Any]] = {}
    for record in records:
        if record.type == "MX":
            preference, host = record.value.split(None, 1)
            value: Any = (int(preference), host)
        else:
            value = tuple(record.strings)
        grouped.setdefault((record.name, record.type), []).append(value)
    for (name, rdtype), values in grouped.items():
        server.set(name, rdtype, values)


def dkim_dns(server: DnsServer, domain: Domain) -> DkimDnsFunc:
    """dkimpy's ``dnsfunc`` over real DNS: ``server`` publishes the DKIM records of
    ``domain``, and a resolver pointed at it answers dkimpy."""
    for record in domain.dkim_records:
        server.set(record.name, "TXT", [record.value])
    return Resolver([server.address], timeout=2).dkim_dnsfunc()


# -- the command line ------------------------------------------------------------------

Invoke = Callable[..., Result]
"""``invoke(*args, input=None, env=None)``: run ``mailfleet ARGS...`` in-process."""


def create_database(url: str) -> None:
    """Open a fleet once on ``url``: the database exists from then on."""

    async def open_once() -> None:
        async with Fleet(database_url=url):
            pass

    anyio.run(open_once)


def ok(result: Result) -> str:
    """The stdout of a command that succeeded."""
    assert result.exit_code == 0, result.output
    return result.stdout


def one_error_line(result: Result) -> str:
    """The single ``error:`` line of a failed command (and no traceback anywhere)."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ")
    return line


# -- certificates and Debian tools -------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and its key, ``mx.pem`` and ``mx.key``
    in ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "mx.pem", folder / "mx.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str, why_ci_fails: str) -> None:
    """Skip the test for ``reason``; under CI (``CI=true``), where it must run, fail it,
    saying ``why_ci_fails``."""
    if ON_CI:
        pytest.fail(f"{reason} ({why_ci_fails})")
    pytest.skip(reason=reason)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def debian_tool(name: str, package: str) -> str:
    """The path of the command ``name`` (from Debian's ``package``): the test skips
    without it, except under CI (``CI=true``, where .ci/run installs it), where it fails."""
    found = shutil.which(name)
    if found is None:
        unavailable(
            f"{name} is not installed (apt-get install {package})", "CI must run these tests"
        )
    return found
