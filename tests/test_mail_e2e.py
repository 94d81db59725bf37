"""End to end over real sockets: smtplib -> the MX -> an agent -> the relay peer.

The DKIM keys are published by a DNS server on loopback (``dns_server``), where
dkimpy reads them through the project's resolver.
"""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path
from typing import ClassVar

import anyio
import anyio.to_thread
import dkim
import pytest

from dnsserver import DnsServer
from mailfleet import Agent, Fleet, InboundMessage, OutgoingAttachment
from mailfleet.mail import parse_message
from relay import relay_peer
from support import dkim_dns, self_signed, wait_until

pytestmark = pytest.mark.anyio

QUESTION = (
    b"From: Ada <ada@example.org>\r\nTo: help@example.com\r\nSubject: Invoice 42\r\n"
    b"Message-ID: <q42@example.org>\r\n\r\nCould you send the invoice again?\r\n"
)


class Accounts(Agent):
    async def on_message(self, message: InboundMessage) -> None:
        await self.reply(
            message,
            text=f"Here it is, {message.from_.name if message.from_ else 'there'}.",
            attachments=[OutgoingAttachment("invoice-42.txt", b"Total: 42 EUR\n", "text/plain")],
        )


async def test_smtp_in_agent_reply_relay_out(database_url: str, dns_server: DnsServer) -> None:
    async with (
        relay_peer() as peer,
        Fleet(
            database_url=database_url,
            smtp_port=0,
            relay_host="127.0.0.1",
            relay_port=peer.port,
            relay_starttls=False,
            poll_interval=0.05,
        ) as fleet,
    ):
        fleet.bind(Accounts)
        await fleet.add_domain("example.com")
        await fleet.provision("help@example.com", agent=Accounts)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)

            def mail_it() -> None:
                with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0) as client:
                    client.sendmail("ada@example.org", ["help@example.com"], QUESTION)

            await anyio.to_thread.run_sync(mail_it)
            await wait_until(lambda: len(peer.received) == 1, within=20)
            tg.cancel_scope.cancel()

        (sent,) = peer.received
        assert sent.rcpt_tos == ["ada@example.org"]
        (domain,) = await fleet.domains()
        dnsfunc = dkim_dns(dns_server, domain)
        for index in range(sent.data.count(b"DKIM-Signature:")):
            assert dkim.DKIM(sent.data).verify(idx=index, dnsfunc=dnsfunc)
        reply = parse_message(sent.data)
        assert reply.subject == "Re: Invoice 42"
        assert reply.in_reply_to == "<q42@example.org>"
        assert reply.references == ("<q42@example.org>",)
        assert reply.text is not None
        assert "Here it is, Ada." in reply.text
        (attachment,) = reply.attachments
        assert attachment.filename == "invoice-42.txt"
        assert attachment.content() == b"Total: 42 EUR\n"


class Inbox(Agent):
    seen: ClassVar[list[str]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.seen.append(message.subject or "")


async def test_the_mx_offers_starttls_when_given_a_certificate(
    database_url: str, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    Inbox.seen = []
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        smtp_tls_cert=cert,
        smtp_tls_key=key,
        poll_interval=0.05,
    ) as fleet:
        fleet.bind(Inbox)
        await fleet.add_domain("example.com")
        await fleet.provision("help@example.com", agent=Inbox)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)

            def over_tls() -> str:
                context = ssl.create_default_context(cafile=str(cert))
                context.check_hostname = False
                with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0) as client:
                    client.ehlo()
                    assert client.has_extn("starttls")
                    client.starttls(context=context)
                    client.sendmail("ada@example.org", ["help@example.com"], QUESTION)
                    return str(client.sock.version())  # type: ignore[union-attr]

            version = await anyio.to_thread.run_sync(over_tls)
            await wait_until(lambda: Inbox.seen == ["Invoice 42"])
            tg.cancel_scope.cancel()
        assert version.startswith("TLS")
