"""No secret ever appears in logs or events: a whole fleet run as an operator runs it.

``mailfleet --verbose run`` in a process of its own, at DEBUG, outside dev
mode, configured through its environment with every kind of secret the
fleet holds:

- a relay password (the relay is an aiosmtpd peer requiring STARTTLS and AUTH,
  refusing the first login, so the failure path runs too),
- an API key (created beforehand, as ``mailfleet`` would, and used over HTTP),
- a webhook secret (a subscription created over the API, delivering to
  tests/webhook_receiver.py),
- a DKIM private key (the sending domain's, given at registration) and the
  passphrase the keys are sealed under,
- on PostgreSQL, a password in the database URL.

The run receives mail over SMTP (the helpdesk example answers it), sends
over the API, and delivers webhooks; then every byte it wrote is searched for
each secret, in clear, URL-encoded, and base64 (the DKIM key's body, line by
line; the relay's AUTH PLAIN and LOGIN blobs): stdout, stderr, the files
under MAILFLEET_HOME, the events (table, API listing and SSE stream), the
webhook requests received, and every other table of the store but the few
that keep a secret by design, each named below with why.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dnsserver import DnsServer
from mailfleet import Fleet
from mailfleet.auth.dkim import DkimKey
from mailfleet.store.database import normalize_url
from mailfleet.store.tables import metadata
from relay import RelayPeer
from support import publish, self_signed
from webhook_receiver import receiver

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
HELPDESK = ROOT / "examples" / "helpdesk" / "helpdesk.py"
DOMAIN = "example.com"
RELAY_USER = "fleet-relay-user"
RELAY_PASSWORD = "rel@y:Pä%ss/w0rd+S3cr3t!"  # every character URL encoding changes
DB_PASSWORD = "db@Pä%ss/w0rd:S3cr3t"
DKIM_PASSPHRASE = "sealed under this passphrase 7f3a"

# Tables that keep a secret by design, and which: the rest must hold none.
# The DKIM keys (table domains) are sealed under the passphrase and the API keys
# (api_keys) hashed: neither holds its secret in clear, and is searched like the rest.
BY_DESIGN = {"webhooks": {"webhook secret"}}
"""table -> the secrets it keeps in clear by design: a delivery is signed with them."""


def variants(secret: str) -> set[str]:
    """``secret`` as it could leak: as is, URL-encoded (both ways), in base64."""
    found = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    found.add(base64.b64encode(secret.encode()).decode())
    return {form for form in found if len(form) >= 8}


class AuthRelay(RelayPeer):
    """The relay peer, requiring STARTTLS and AUTH; it refuses the first login."""

    logins: list[str]

    def authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        self.logins.append(mechanism)
        ok = (
            isinstance(data, LoginPassword)
            and data.login == RELAY_USER.encode()
            and data.password == RELAY_PASSWORD.encode()
            and len(self.logins) > 1
        )
        return AuthResult(success=ok, handled=False)


@asynccontextmanager
async def auth_relay(cert: Path, key: Path) -> AsyncIterator[AuthRelay]:
    import asyncio
    import ssl

    peer = AuthRelay()
    peer.logins = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def factory() -> SMTP:
        peer.connections += 1
        return SMTP(
            peer,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=peer.authenticate,
        )

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        await server.wait_closed()


def dkim_key() -> tuple[DkimKey, str]:
    """A fresh RSA key for the domain, and the base64 body of its PEM."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return DkimKey("s2024", "rsa", pem), body


def environment(settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLEET_")}
    for name, value in settings.items():
        if isinstance(value, list):
            value = json.dumps(value)
        env[f"MAILFLEET_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return env


@pytest.fixture
def secret_database_url(database_url: str) -> str:
    """``database_url``, on PostgreSQL with a password (the test server trusts loopback)."""
    if not database_url.startswith("postgresql"):
        return database_url
    url = sa.make_url(database_url).set(password=DB_PASSWORD)
    return url.render_as_string(hide_password=False)


def start_run(env: dict[str, str], folder: Path, stderr_path: Path) -> subprocess.Popen[bytes]:
    """``mailfleet --verbose run`` of the helpdesk example, stderr to ``stderr_path``."""
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "mailfleet", "--verbose", "run", str(HELPDESK)],
            env=env,
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )


def banner(process: subprocess.Popen[bytes], lines: list[str]) -> tuple[int, str]:
    """Read ``run``'s stdout until its banner gave the SMTP port and the API's URL."""
    assert process.stdout is not None
    smtp = api = None
    deadline = time.monotonic() + 60
    while (smtp is None or api is None) and time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            raise AssertionError("mailfleet run ended:\n" + "".join(lines))
        lines.append(line)
        if line.startswith("SMTP: "):
            smtp = int(line.split()[1].rsplit(":", 1)[1])
        if line.startswith("HTTP API: "):
            api = line.split()[2].removesuffix("/v1")
    assert smtp is not None, lines
    assert api is not None, lines
    return smtp, api


def drain(process: subprocess.Popen[bytes], lines: list[str]) -> None:
    assert process.stdout is not None
    for raw in process.stdout:
        lines.append(raw.decode())


def dump_tables(url: str) -> dict[str, str]:
    """Every row of every table of the store, as text (bytes as Latin-1), by table."""
    engine = sa.create_engine(normalize_url(url))
    dumped: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            for table in metadata.sorted_tables:
                if table.name not in present:
                    continue
                cells = []
                for row in conn.execute(sa.select(table)):
                    for value in row:
                        if isinstance(value, bytes | memoryview):
                            cells.append(bytes(value).decode("latin-1"))
                        elif isinstance(value, dict | list):
                            cells.append(json.dumps(value, ensure_ascii=False))
                        else:
                            cells.append(str(value))
                dumped[table.name] = "\n".join(cells)
    finally:
        engine.dispose()
    return dumped


def home_files(home: Path) -> dict[str, str]:
    return {
        str(path.relative_to(home)): path.read_bytes().decode("latin-1")
        for path in sorted(home.rglob("*"))
        if path.is_file()
    }


async def read_stream(client: httpx.AsyncClient, count: int) -> str:
    """The SSE stream from the first event, until ``count`` events came."""
    text = ""
    with anyio.move_on_after(15):
        async with client.stream("GET", "/v1/events/stream", params={"after": "0"}) as stream:
            async for chunk in stream.aiter_text():
                text += chunk
                if text.count("\nid: ") + text.startswith("id: ") >= count:
                    break
    return text


async def wait_for(condition: Any, what: str, within: float = 60) -> None:
    with anyio.move_on_after(within):
        while not condition():  # noqa: ASYNC110 - state of servers in this process
            await anyio.sleep(0.05)
    assert condition(), f"no {what} within {within} s"


async def test_no_secret_appears_in_anything_a_run_wrote(
    secret_database_url: str, dns_server: DnsServer, tmp_path: Path
) -> None:
    home = Path(os.environ["MAILFLEET_HOME"])
    cert, cert_key = self_signed(tmp_path)
    dkim, dkim_body = dkim_key()
    async with auth_relay(cert, cert_key) as relay, receiver() as hooks:
        settings: dict[str, Any] = {
            "database_url": secret_database_url,
            "home": home,
            "dev_mode": False,
            "dkim_key_secret": DKIM_PASSPHRASE,
            "dns_nameservers": [dns_server.address],
            "dns_timeout": 2,
            "mx_host": "mx.example.net",
            "relay_host": "127.0.0.1",
            "relay_port": relay.port,
            "relay_starttls": True,
            "relay_validate_certs": False,
            "relay_username": RELAY_USER,
            "relay_password": RELAY_PASSWORD,
            "retry_schedule": [0.2, 0.2, 0.2],
            "poll_interval": 0.05,
            "webhook_retry_base_seconds": 0.2,
        }
        # What the operator does first: the domain with its key and DNS, an API key.
        async with Fleet(**settings) as fleet:
            await fleet.add_domain(DOMAIN, selector=dkim.selector, dkim_keys=[dkim])
            publish(dns_server, await fleet.domain_records(DOMAIN))
            dns_server.set("example.org", "MX", [(10, "mx.example.org")])
            assert (await fleet.check_domain(DOMAIN)).state == "verified"
            _, api_key = await fleet.create_api_key("operator", admin=True)

        env = environment(
            {**settings, "smtp_port": 0, "api_port": 0, "log_level": "debug", "log_format": "json"}
        )
        stderr_path = tmp_path / "stderr.log"
        stdout_lines: list[str] = []
        process = start_run(env, tmp_path, stderr_path)
        try:
            smtp_port, api_url = await anyio.to_thread.run_sync(banner, process, stdout_lines)
            drainer = threading.Thread(target=drain, args=(process, stdout_lines), daemon=True)
            drainer.start()
            headers = {"Authorization": f"Bearer {api_key}"}
            async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=20) as api:
                wrong = await api.get("/v1/grants", headers={"Authorization": "Bearer no"})
                assert wrong.status_code == 401
                created = await api.post("/v1/webhooks", json={"url": hooks.url})
                assert created.status_code == 201, created.text
                webhook_secret = created.json()["secret"]
                sent = await api.post(
                    "/v1/grants/help@example.com/messages",
                    json={"to": ["ada@example.org"], "subject": "From the API", "text": "Hi."},
                )
                assert sent.status_code == 202, sent.text
                await anyio.to_thread.run_sync(mail_the_helpdesk, smtp_port)
                # the API's send and the helpdesk's answer, through the relay's AUTH
                await wait_for(lambda: len(relay.received) >= 2, "two messages at the relay")
                await wait_for(
                    lambda: (
                        {"message.received", "message.sent"} <= {r.json["type"] for r in hooks.ok()}
                    ),
                    f"webhooks of a receive and a send (came: {hooks.received})",
                )
                listed = await api.get("/v1/events", params={"limit": 1000})
                assert listed.status_code == 200
                events = listed.json()["items"]
                stream = await read_stream(api, len(events))
            process.send_signal(signal.SIGTERM)
            await anyio.to_thread.run_sync(lambda: process.wait(timeout=30))
            await anyio.to_thread.run_sync(lambda: drainer.join(10))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        assert process.returncode == 0, "".join(stdout_lines) + stderr_path.read_text()

    assert relay.logins[0] == "PLAIN"
    assert len(relay.logins) >= 2  # refused once, then in
    secrets = {
        "relay password": variants(RELAY_PASSWORD)
        | {base64.b64encode(f"\0{RELAY_USER}\0{RELAY_PASSWORD}".encode()).decode()},
        "API key": variants(api_key),
        "webhook secret": variants(webhook_secret) | {webhook_secret.removeprefix("whsec_")},
        "DKIM private key": {
            dkim_body,
            *(dkim_body[i : i + 64] for i in range(0, len(dkim_body), 64)),
        },
        "DKIM passphrase": variants(DKIM_PASSPHRASE),
    }
    if secret_database_url.startswith("postgresql"):
        secrets["database password"] = variants(DB_PASSWORD)

    stderr_text = stderr_path.read_text()
    written: dict[str, str] = {
        "stdout": "".join(stdout_lines),
        "stderr": stderr_text,
        "events (API)": json.dumps(events, ensure_ascii=False),
        "events (SSE)": stream,
        **{f"webhook request {i}": repr(r) for i, r in enumerate(hooks.received)},
        **{f"MAILFLEET_HOME/{name}": text for name, text in home_files(home).items()},
        **{f"table {name}": text for name, text in dump_tables(secret_database_url).items()},
    }
    # The run did write what is searched: DEBUG logs, events of every kind, the webhooks.
    assert '"level": "debug"' in stderr_text
    assert "HTTP API: " in written["stdout"]
    kinds = {event["type"] for event in events}
    assert {"message.received", "message.sent", "domain.created"} <= kinds, kinds
    assert hooks.ok()
    assert dkim.selector in written["table messages"]  # the sent mail is signed with the key

    leaks = [
        f"{name} in {where}"
        for where, text in written.items()
        for name, forms in secrets.items()
        if name not in BY_DESIGN.get(where.removeprefix("table "), set())
        and any(form in text for form in forms)
    ]
    assert leaks == []
    assert any(webhook_secret in text for text in [written["table webhooks"]])


def mail_the_helpdesk(port: int) -> None:
    message = (
        "From: Ada <ada@example.org>\r\nTo: help@example.com\r\nSubject: Where is my order?\r\n"
        "Message-ID: <order-1@example.org>\r\n\r\nIt has not come.\r\n"
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("ada@example.org", ["help@example.com"], message)
