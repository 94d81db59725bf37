"""AUTH is never offered in the clear, nor at all: the MX logs nobody in.

The MX takes mail for the fleet's own addresses; it has no submission
service, so no login. aiosmtpd would offer ``AUTH LOGIN PLAIN`` after
STARTTLS (and fail every attempt); the MX offers none, plain or over TLS,
and answers ``503 5.5.1`` to the command wherever it comes. Tried over a
socket (smtplib) and with swaks, which must find nothing to log in to, on an
MX with and without a certificate; the credentials a client sends anyway are
in no log line.
"""

from __future__ import annotations

import base64
import io
import logging
import smtplib
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from mailfleet import Fleet
from support import debian_tool, self_signed, wait_until

pytestmark = pytest.mark.anyio

NO_AUTH = (503, b"5.5.1 Error: authentication not enabled")
PASSWORD = "hunter2-never-logged"
PLAIN = base64.b64encode(f"\0ada\0{PASSWORD}".encode()).decode()


@asynccontextmanager
async def mx(database_url: str, tls: tuple[Path, Path] | None) -> AsyncIterator[Fleet]:
    cert, key = tls if tls is not None else (None, None)
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        smtp_tls_cert=cert,
        smtp_tls_key=key,
        poll_interval=0.05,
    ) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com")
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_until(lambda: fleet.smtp_port is not None)
            yield fleet
            tg.cancel_scope.cancel()


@contextmanager
def everything_logged() -> Iterator[io.StringIO]:
    """What mailfleet and aiosmtpd log at DEBUG meanwhile, whatever else configured them."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(name) for name in ("mailfleet", "mail.log")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def tries(port: int, cert: Path | None) -> dict[str, object]:
    """EHLO and every form of AUTH, in the clear and (with ``cert``) after STARTTLS."""
    seen: dict[str, object] = {}
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        seen["before EHLO"] = client.docmd("AUTH", "PLAIN " + PLAIN)
        client.ehlo("client.example.org")
        seen["features"] = dict(client.esmtp_features)
        seen["plain"] = [
            client.docmd("AUTH", "PLAIN " + PLAIN),
            client.docmd("AUTH", "PLAIN"),
            client.docmd("AUTH", "LOGIN"),
            client.docmd("AUTH", "CRAM-MD5"),
            client.docmd("AUTH"),
        ]
        seen["then"] = [client.mail("ada@example.org"), client.rcpt("desk@example.com")]
        client.rset()
        if cert is not None:
            context = ssl.create_default_context(cafile=str(cert))
            context.check_hostname = False
            client.starttls(context=context)
            client.ehlo("client.example.org")
            seen["tls features"] = dict(client.esmtp_features)
            seen["tls"] = [client.docmd("AUTH", "PLAIN " + PLAIN), client.docmd("AUTH", "LOGIN")]
            seen["tls then"] = [client.mail("ada@example.org"), client.rcpt("desk@example.com")]
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.helo("client.example.org")  # plain SMTP: no extensions at all
        seen["helo"] = client.docmd("AUTH", "PLAIN " + PLAIN)
    return seen


@pytest.mark.parametrize("with_tls", [False, True], ids=["plain MX", "MX with STARTTLS"])
async def test_auth_is_never_offered_and_always_refused(
    database_url: str, tmp_path: Path, with_tls: bool
) -> None:
    tls = self_signed(tmp_path) if with_tls else None
    with everything_logged() as logged:
        async with mx(database_url, tls) as fleet:
            seen = await anyio.to_thread.run_sync(tries, fleet.smtp_port, tls and tls[0])
    features = seen["features"]
    assert isinstance(features, dict)
    assert "auth" not in features
    assert ("starttls" in features) is with_tls
    assert seen["before EHLO"] == NO_AUTH
    assert seen["plain"] == [NO_AUTH] * 5
    assert seen["helo"] == NO_AUTH
    assert seen["then"] == [(250, b"2.1.0 OK"), (250, b"2.1.5 OK")]  # the session goes on
    if with_tls:
        tls_features = seen["tls features"]
        assert isinstance(tls_features, dict)
        assert "auth" not in tls_features  # aiosmtpd would offer LOGIN PLAIN here
        assert "starttls" not in tls_features
        assert seen["tls"] == [NO_AUTH] * 2
        assert seen["tls then"] == [(250, b"2.1.0 OK"), (250, b"2.1.5 OK")]
    text = logged.getvalue()
    assert "SMTP listening" in text  # the capture works
    assert PLAIN not in text
    assert PASSWORD not in text


@pytest.mark.parametrize("with_tls", [False, True], ids=["plain MX", "MX with STARTTLS"])
async def test_swaks_finds_no_auth_to_use(
    database_url: str, tmp_path: Path, with_tls: bool
) -> None:
    swaks = debian_tool("swaks", "swaks")
    tls = self_signed(tmp_path) if with_tls else None
    async with mx(database_url, tls) as fleet:
        command = [
            swaks,
            *("--server", f"127.0.0.1:{fleet.smtp_port}", "--ehlo", "client.example.org"),
            *("--from", "ada@example.org", "--to", "desk@example.com", "--timeout", "10"),
            *("--auth", "PLAIN", "--auth-user", "ada", "--auth-password", PASSWORD),
            *(["--tls"] if with_tls else []),
        ]
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(command, capture_output=True, timeout=30, check=False)
        )
    transcript = done.stdout.decode()
    assert done.returncode != 0, transcript
    assert "did not advertise authentication" in transcript + done.stderr.decode()
    assert "-> AUTH" not in transcript  # swaks sent no credentials
    if with_tls:
        assert "TLS started" in transcript
