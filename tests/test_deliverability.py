"""Bounces and complaints acted on, over real sockets: the relay refuses, or a
report comes back to the VERP address through the MX; suppression follows.

The relay is an aiosmtpd peer on loopback; the reports are written here as
receivers send them and mailed to the fleet's own MX with smtplib.
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa

from mailers import arf, dsn, mail_to_mx
from mailfleet import (
    Agent,
    Bounce,
    BounceClass,
    BounceReason,
    Complaint,
    Fleet,
    InboundMessage,
    InvalidInput,
    SendStatus,
    SuppressionReason,
    SuppressionRow,
)
from mailfleet.store.tables import reports_table
from relay import RelayPeer, relay_peer
from support import wait_until

pytestmark = pytest.mark.anyio


class Outreach(Agent):
    bounces: ClassVar[list[Bounce]] = []
    complaints: ClassVar[list[Complaint]] = []
    messages: ClassVar[list[InboundMessage]] = []

    async def on_message(self, message: InboundMessage) -> None:
        self.messages.append(message)

    async def on_bounce(self, bounce: Bounce) -> None:
        self.bounces.append(bounce)

    async def on_complaint(self, complaint: Complaint) -> None:
        self.complaints.append(complaint)


@asynccontextmanager
async def serving_fleet(
    database_url: str, peer: RelayPeer, **settings: Any
) -> AsyncIterator[Fleet]:
    Outreach.bounces, Outreach.complaints, Outreach.messages = [], [], []
    async with Fleet(
        database_url=database_url,
        smtp_port=0,
        poll_interval=0.05,
        relay_host="127.0.0.1",
        relay_port=peer.port,
        relay_starttls=False,
        retry_schedule=[0.05],
        **settings,
    ) as fleet:
        fleet.bind(Outreach)
        await fleet.add_domain("example.com")
        await fleet.provision("sales@example.com", agent=Outreach)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


async def sent_one(fleet: Fleet, peer: RelayPeer, to: str) -> tuple[str, str]:
    """Send one message to ``to`` through the relay; its VERP address and Message-ID."""
    before = len(peer.received)
    result = await fleet.send("sales@example.com", to, subject="Our offer", text="Buy now.")
    assert result.status is SendStatus.QUEUED
    await wait_until(lambda: len(peer.received) > before, within=20)
    assert result.message_id is not None
    return peer.received[-1].mail_from, result.message_id


async def test_a_dsn_at_the_verp_address_bounces_suppresses_and_calls_on_bounce(
    database_url: str,
) -> None:
    async with relay_peer() as peer, serving_fleet(database_url, peer) as fleet:
        verp, message_id = await sent_one(fleet, peer, "gone@example.org")
        report = dsn(
            verp,
            "gone@example.org",
            message_id,
            status="5.1.1",
            diagnostic="550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
        )
        answer = await mail_to_mx(fleet, "", verp, report)
        assert answer.startswith("250")
        await wait_until(lambda: len(Outreach.bounces) == 1, within=20)

        (bounce,) = Outreach.bounces
        assert bounce.recipient == "gone@example.org"
        assert bounce.bounce_class is BounceClass.HARD
        assert bounce.reason is BounceReason.USER_UNKNOWN
        assert bounce.status == "5.1.1"
        assert bounce.reply_code == 550
        assert bounce.message_id == message_id
        assert bounce.source == "report"
        assert Outreach.messages == []  # a report is never an ordinary message

        (event,) = await fleet.events(type="message.bounced")
        grant = await fleet.grant("sales@example.com")
        assert event.grant_id == grant.id
        assert event.payload["workspace_id"] == grant.workspace_id
        assert event.payload["class"] == "hard"
        assert event.payload["reason"] == "user_unknown"
        assert event.payload["status"] == "5.1.1"
        assert event.payload["header_message_id"] == message_id

        entry = await fleet.suppression("gone@example.org")
        assert entry is not None
        assert entry.reason is SuppressionReason.HARD_BOUNCE
        assert entry.event_id == event.id
        assert "user_unknown" in (entry.detail or "")

        outbox_before = len(await fleet.outbox(limit=100))
        again = await fleet.send("sales@example.com", "gone@example.org", subject="Hi", text="?")
        assert again.status is SendStatus.SUPPRESSED
        assert "gone@example.org (hard_bounce" in (again.detail or "")
        assert len(await fleet.outbox(limit=100)) == outbox_before  # nothing queued

        # The MX retrying the same report (a lost 250) counts it once.
        assert (await mail_to_mx(fleet, "", verp, report)).startswith("250")
        await anyio.sleep(0.3)
        assert len(await fleet.events(type="message.bounced")) == 1
        assert len(Outreach.bounces) == 1


async def test_an_arf_complaint_suppresses_and_calls_on_complaint(database_url: str) -> None:
    async with relay_peer() as peer, serving_fleet(database_url, peer) as fleet:
        verp, message_id = await sent_one(fleet, peer, "annoyed@example.org")
        answer = await mail_to_mx(
            fleet,
            "feedback@fbl.example.net",
            "bounces@example.com",
            arf("annoyed@example.org", verp, message_id),
        )
        assert answer.startswith("250")
        await wait_until(lambda: len(Outreach.complaints) == 1, within=20)
        (complaint,) = Outreach.complaints
        assert complaint.recipient == "annoyed@example.org"
        assert complaint.feedback_type == "abuse"
        assert complaint.message_id == message_id
        (event,) = await fleet.events(type="message.complained")
        assert event.payload["recipient"] == "annoyed@example.org"
        entry = await fleet.suppression("annoyed@example.org")
        assert entry is not None
        assert entry.reason is SuppressionReason.COMPLAINT
        again = await fleet.send("sales@example.com", "annoyed@example.org", subject="Hi", text="?")
        assert again.status is SendStatus.SUPPRESSED


async def test_a_forged_token_is_kept_and_suppresses_nothing(database_url: str) -> None:
    async with relay_peer() as peer, serving_fleet(database_url, peer) as fleet:
        # The forger knows the real Message-ID (any recipient does), not the token.
        _, message_id = await sent_one(fleet, peer, "victim@example.org")
        forged = "bounces+00000000000000000000@example.com"
        report = dsn(
            forged,
            "victim@example.org",
            message_id,
            status="5.1.1",
            diagnostic="550 5.1.1 User unknown",
        )
        assert (await mail_to_mx(fleet, "", forged, report)).startswith("250")
        await anyio.sleep(0.3)
        assert await fleet.suppression("victim@example.org") is None
        assert await fleet.events(type="message.bounced") == []
        assert Outreach.bounces == []
        assert Outreach.messages == []
        rows = await fleet.database.read(
            lambda conn: conn.execute(
                sa.select(reports_table.c.attributed, reports_table.c.recipient)
            ).all()
        )
        assert [tuple(r) for r in rows] == [(False, forged)]
        ok = await fleet.send("sales@example.com", "victim@example.org", subject="Hi", text="!")
        assert ok.status is SendStatus.QUEUED


async def test_a_bounce_address_on_a_foreign_domain_is_refused_at_rcpt(
    database_url: str,
) -> None:
    async with relay_peer() as peer, serving_fleet(database_url, peer) as fleet:

        def rcpt() -> int:
            with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0) as client:
                client.ehlo("mx.example.net")
                client.mail("")
                return client.rcpt("bounces+abc@elsewhere.example.net")[0]

        assert await anyio.to_thread.run_sync(rcpt) == 550


async def test_a_report_to_the_grant_naming_its_send_is_a_bounce(database_url: str) -> None:
    async with relay_peer() as peer, serving_fleet(database_url, peer) as fleet:
        _, message_id = await sent_one(fleet, peer, "moved@example.org")
        report = dsn(
            "sales@example.com",
            "moved@example.org",
            message_id,
            status="5.1.6",
            diagnostic="550 5.1.6 Recipient has moved",
        )
        assert (await mail_to_mx(fleet, "", "sales@example.com", report)).startswith("250")
        await wait_until(lambda: len(Outreach.bounces) == 1, within=20)
        assert Outreach.bounces[0].reason is BounceReason.HAS_MOVED
        assert Outreach.messages == []
        # An auto-reply to the grant is ordinary mail for on_message.
        vacation = (
            b"From: someone@example.org\r\nTo: sales@example.com\r\n"
            b"Subject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nBack Monday.\r\n"
        )
        assert (await mail_to_mx(fleet, "", "sales@example.com", vacation)).startswith("250")
        await wait_until(lambda: len(Outreach.messages) == 1, within=20)


async def test_the_relay_refusing_a_recipient_counts_as_a_bounce(database_url: str) -> None:
    async with relay_peer() as peer, serving_fleet(database_url, peer) as fleet:
        peer.rcpt_replies["nobody@example.org"] = "550 5.1.1 <nobody@example.org>: user unknown"
        peer.rcpt_replies["strict@example.org"] = (
            "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"
        )
        for to in ("nobody@example.org", "strict@example.org"):
            result = await fleet.send("sales@example.com", to, subject="Hi", text="Hello")
            assert result.status is SendStatus.QUEUED
        await wait_until(lambda: len(Outreach.bounces) == 2, within=20)
        by_recipient = {b.recipient: b for b in Outreach.bounces}
        hard, soft = by_recipient["nobody@example.org"], by_recipient["strict@example.org"]
        assert (hard.bounce_class, hard.reason, hard.source) == (
            BounceClass.HARD,
            BounceReason.USER_UNKNOWN,
            "relay",
        )
        assert soft.bounce_class is BounceClass.SOFT
        assert soft.reason is BounceReason.BLOCKED
        assert await fleet.suppression("nobody@example.org") is not None
        assert await fleet.suppression("strict@example.org") is None  # soft: not yet


async def test_soft_bounces_in_a_row_suppress_and_a_delivery_resets_them(
    database_url: str,
) -> None:
    async with (
        relay_peer() as peer,
        serving_fleet(database_url, peer, soft_bounce_limit=2) as fleet,
    ):
        full = "552 5.2.2 <full@example.org>: mailbox full"

        async def attempt(expected_bounces: int) -> None:
            await fleet.send("sales@example.com", "full@example.org", subject="Hi", text="x")
            await wait_until(lambda: len(Outreach.bounces) == expected_bounces, within=20)

        peer.rcpt_replies["full@example.org"] = full
        await attempt(1)
        del peer.rcpt_replies["full@example.org"]
        await sent_one(fleet, peer, "full@example.org")  # delivered: the row is broken
        peer.rcpt_replies["full@example.org"] = full
        await attempt(2)
        assert await fleet.suppression("full@example.org") is None
        await attempt(3)
        entry = await fleet.suppression("full@example.org")
        assert entry is not None
        assert entry.reason is SuppressionReason.SOFT_BOUNCES
        assert "mailbox_full" in (entry.detail or "")


async def test_send_gates_answer_invalid_recipient_and_suppressed(database_url: str) -> None:
    async with Fleet(database_url=database_url) as fleet:
        await fleet.add_domain("example.com")
        await fleet.create_workspace("outreach")
        await fleet.provision("a@example.com")
        await fleet.provision("b@example.com", workspace="outreach")
        bad = await fleet.send("a@example.com", "not an address", subject="s", text="t")
        assert bad.status is SendStatus.INVALID_RECIPIENT
        assert "not an address" in (bad.detail or "")

        assert await fleet.suppress("Stop@Example.org", detail="asked by phone")
        assert not await fleet.suppress("stop@example.org")  # once
        await fleet.suppress("only-outreach@example.org", workspace="outreach")
        refused = await fleet.send(
            "a@example.com", ["ok@example.org", "stop@example.org"], subject="s", text="t"
        )
        assert refused.status is SendStatus.SUPPRESSED
        assert "stop@example.org (manual: asked by phone)" in (refused.detail or "")
        assert await fleet.outbox(limit=10) == []  # nothing queued

        # A workspace's own entry stops only that workspace's grants.
        fine = await fleet.send("a@example.com", "only-outreach@example.org", subject="s", text="t")
        assert fine.status is SendStatus.QUEUED
        held = await fleet.send("b@example.com", "only-outreach@example.org", subject="s", text="t")
        assert held.status is SendStatus.SUPPRESSED

        listed = await fleet.suppressions()
        assert [(s.address, s.workspace) for s in listed] == [
            ("stop@example.org", None),
            ("only-outreach@example.org", "outreach"),
        ]
        assert await fleet.unsuppress("stop@example.org")
        assert not await fleet.unsuppress("stop@example.org")
        again = await fleet.send("a@example.com", "stop@example.org", subject="s", text="t")
        assert again.status is SendStatus.QUEUED


async def test_suppress_many_checks_every_row_before_storing_any(database_url: str) -> None:
    async with Fleet(database_url=database_url) as fleet:
        rows = [
            SuppressionRow("one@example.org"),
            SuppressionRow("not-an-address"),
            SuppressionRow("two@example.org", reason="bored"),
            SuppressionRow("three@example.org", workspace="no-such-workspace"),
        ]
        with pytest.raises(InvalidInput) as caught:
            await fleet.suppress_many(rows)
        message = str(caught.value)
        assert "row 2" in message
        assert "row 3" in message
        assert "row 4" in message
        assert "bored" in message
        assert "no-such-workspace" in message
        assert await fleet.count_suppressions() == 0
        assert await fleet.suppress_many([rows[0], SuppressionRow("x@example.org", "unsubscribe")])
        assert [s.reason for s in await fleet.suppressions()] == [
            SuppressionReason.MANUAL,
            SuppressionReason.UNSUBSCRIBE,
        ]
