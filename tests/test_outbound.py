"""Outbound mail over real sockets: the fleet's sender talks to an aiosmtpd relay peer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import dkim
import pytest

from dnsserver import DnsServer
from mailfleet import Agent, Fleet, InboundMessage, SendResult, SigningFailed
from mailfleet.auth.dkim import DkimSigner, generate_key
from mailfleet.mail.headers import parse_headers
from mailfleet.runtime.outbox import _sign_batch, _Unsigned
from relay import RelayPeer, relay_peer
from support import dkim_dns, wait_for_events, wait_until

pytestmark = pytest.mark.anyio

INBOUND = (
    b"From: Ada <ada@example.org>\r\nTo: desk@example.com\r\nSubject: Printer on fire\r\n"
    b"Message-ID: <fire@example.org>\r\nReferences: <older@example.org>\r\n\r\nHelp!\r\n"
)


class Desk(Agent):
    results: ClassVar[list[SendResult]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.results.append(await self.reply(message, text="On it."))


@asynccontextmanager
async def fleet_with_relay(
    database_url: str, peer: RelayPeer, **settings: Any
) -> AsyncIterator[Fleet]:
    Desk.results = []
    async with Fleet(
        database_url=database_url,
        poll_interval=0.05,
        relay_host="127.0.0.1",
        relay_port=peer.port,
        relay_starttls=False,
        retry_schedule=[0.05, 0.05],
        **settings,
    ) as fleet:
        fleet.bind(Desk)
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com", agent=Desk)
        yield fleet


async def serve_until(fleet: Fleet, condition: Any) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.serve)
        await wait_until(condition, within=20)
        tg.cancel_scope.cancel()


async def test_a_reply_reaches_the_relay_signed_and_threaded(
    database_url: str, dns_server: DnsServer
) -> None:
    async with relay_peer() as peer, fleet_with_relay(database_url, peer) as fleet:
        await fleet.deliver("desk@example.com", INBOUND)
        await serve_until(fleet, lambda: len(peer.received) == 1)
        (sent,) = peer.received
        assert sent.rcpt_tos == ["ada@example.org"]
        assert sent.mail_from.startswith("bounces+")
        assert sent.mail_from.endswith("@example.com")
        assert b"In-Reply-To: <fire@example.org>" in sent.data
        assert b"References: <older@example.org> <fire@example.org>" in sent.data
        assert b"Subject: Re: Printer on fire" in sent.data
        (domain,) = await fleet.domains()
        signer = dkim.DKIM(sent.data)
        signatures = sent.data.count(b"DKIM-Signature:")
        assert signatures == 2  # RSA and Ed25519
        dnsfunc = dkim_dns(dns_server, domain)  # the keys, over DNS from a loopback server
        for index in range(signatures):
            assert signer.verify(idx=index, dnsfunc=dnsfunc)
        events = [e.type for e in await fleet.events(limit=1000)]
        assert "message.sent" in events
        (sent_event,) = await fleet.events(type="message.sent")
        assert sent_event.payload["recipients"] == ["ada@example.org"]


async def test_a_4xx_is_retried_then_delivered(database_url: str) -> None:
    async with relay_peer() as peer, fleet_with_relay(database_url, peer) as fleet:
        peer.data_replies = ["451 4.7.1 Greylisted, try again", "250 OK"]
        await fleet.deliver("desk@example.com", INBOUND)
        await serve_until(fleet, lambda: len(peer.received) == 1)
        assert peer.data_commands == 2
        (deferred,) = await fleet.events(type="message.deferred")
        assert deferred.payload["code"] == 451
        await wait_for_events(fleet, "message.sent")
        assert len(await fleet.events(type="message.sent")) == 1
        assert peer.connections == 1  # the pooled connection was reused after the 451


async def test_a_5xx_records_a_hard_bounce(database_url: str) -> None:
    async with relay_peer() as peer, fleet_with_relay(database_url, peer) as fleet:
        peer.rcpt_replies["ada@example.org"] = "550 5.1.1 No such user"
        await fleet.deliver("desk@example.com", INBOUND)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_for_events(fleet, "message.bounced")
            tg.cancel_scope.cancel()
        (bounce,) = await fleet.events(type="message.bounced")
        assert bounce.payload["bounce"] == "hard"
        assert bounce.payload["code"] == 550
        assert bounce.payload["recipients"] == ["ada@example.org"]
        assert peer.received == []


async def test_a_spent_retry_schedule_is_a_soft_bounce(database_url: str) -> None:
    async with relay_peer() as peer, fleet_with_relay(database_url, peer) as fleet:
        peer.data_replies = ["452 4.3.1 Out of memory"] * 3
        await fleet.deliver("desk@example.com", INBOUND)
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_for_events(fleet, "message.bounced")
            tg.cancel_scope.cancel()
        assert len(await fleet.events(type="message.deferred")) == 2
        (bounce,) = await fleet.events(type="message.bounced")
        assert bounce.payload["bounce"] == "soft"
        assert peer.data_commands == 3


async def test_a_pending_outbox_is_delivered_once_after_a_restart(database_url: str) -> None:
    async with relay_peer() as peer:
        async with fleet_with_relay(database_url, peer) as fleet:
            result = await fleet.send(
                "desk@example.com", "bob@example.org", subject="Before the restart", text="x"
            )
            assert result.ok
        assert peer.received == []  # nobody was serving
        async with fleet_with_relay(database_url, peer) as fleet:
            await serve_until(fleet, lambda: len(peer.received) == 1)
            await anyio.sleep(0.3)  # a second delivery would have happened by now
        assert len(peer.received) == 1
        assert b"Subject: Before the restart" in peer.received[0].data


class Pen(Agent):
    """Writes to a colleague in the same fleet, and to the outside world."""

    got: ClassVar[list[str]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.got.append(f"{self.address}:{message.subject}")
        if message.subject == "start":
            await self.send("pal@example.com", subject="hello pal", text="hi")
            await self.send("someone@example.net", subject="hello world", text="hi")


async def test_dev_mode_delivers_locally_and_captures_the_rest(database_url: str) -> None:
    Pen.got = []
    async with Fleet(database_url=database_url, poll_interval=0.05) as fleet:
        fleet.bind(Pen)
        await fleet.add_domain("example.com")
        me = await fleet.provision("pen@example.com", agent=Pen)
        await fleet.provision("pal@example.com", agent=Pen)
        await fleet.deliver(me, b"Subject: start\r\n\r\ngo\r\n")
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.serve)
            await wait_until(lambda: "pal@example.com:hello pal" in Pen.got)
            await wait_for_events(fleet, "message.captured")
            tg.cancel_scope.cancel()
        (captured,) = await fleet.events(type="message.captured")
        assert captured.payload["recipients"] == ["someone@example.net"]
        listed = await fleet.outbox()
        assert {(o.status, o.recipients) for o in listed} == {
            ("sent", ("pal@example.com",)),
            ("captured", ("someone@example.net",)),
        }
        shown = await fleet.outbox_message(listed[0].id)
        assert shown is not None
        assert shown.raw is not None
        assert b"DKIM-Signature:" in shown.raw


async def test_a_fleet_can_serve_again_after_a_stop(database_url: str) -> None:
    async with relay_peer() as peer, fleet_with_relay(database_url, peer) as fleet:
        await fleet.deliver("desk@example.com", INBOUND)
        await serve_until(fleet, lambda: len(peer.received) == 1)
        await fleet.deliver("desk@example.com", INBOUND.replace(b"fire@", b"again@"))
        await serve_until(fleet, lambda: len(peer.received) == 2)  # a fresh worker and sender
        assert b"In-Reply-To: <again@example.org>" in peer.received[1].data


async def test_messages_are_signed_in_batches_and_a_failure_stays_with_its_message() -> None:
    """The outbox signs a batch in one worker thread; one message that cannot be
    signed gets its own error, the others their signatures."""

    class BrokenSigner:
        domain = "example.com"

        def sign(self, raw: bytes) -> bytes:
            raise ValueError("no usable key")

    signer = DkimSigner("example.com", [generate_key("ed25519", selector="s1")])
    raw = b"From: desk@example.com\r\nTo: bob@example.org\r\nSubject: Hi\r\n\r\nHello.\r\n"
    batch = [_Unsigned(signer, raw), _Unsigned(BrokenSigner(), raw), _Unsigned(None, raw)]  # type: ignore[arg-type]
    signed, broken, unsigned = await _sign_batch(batch)
    assert isinstance(signed, tuple)
    assert signed[0].startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    assert signed[0].endswith(raw)
    assert signed[1].subject == "Hi"
    assert isinstance(broken, SigningFailed)
    assert isinstance(broken.__cause__, ValueError)
    assert str(broken) == "DKIM signing for example.com failed: ValueError: no usable key"
    assert unsigned == (raw, parse_headers(raw))
