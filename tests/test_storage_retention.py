"""Storage, retention and the policy's inbound limits, over real SMTP on both backends.

An smtplib client talks to the fleet's aiosmtpd MX on loopback; the store is
the real SQLite file or PostgreSQL database of the ``database_url`` fixture.
Retention is swept on a clock the test gives (``sweep_retention(now=...)``)
and, in ``serve()``, on the real one with messages whose age the test set.
"""

from __future__ import annotations

import smtplib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa

from mailfleet import Agent, Fleet, InboundMessage
from mailfleet.store import storage
from mailfleet.store.scope import Scope, Tx
from mailfleet.store.tables import messages_table, queue_table
from support import wait_for_events, wait_until

pytestmark = pytest.mark.anyio


def message(subject: str, *, spammy: bool = False, body: str = "Hello.") -> bytes:
    """A plain message; ``spammy``: no Date, no Message-ID, a forged-looking From."""
    if spammy:
        head = f'From: "security@bank.example" <ada@example.org>\r\nSubject: {subject}\r\n'
    else:
        head = (
            "From: Ada <ada@example.org>\r\n"
            f"Subject: {subject}\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
        )
    return (head + "To: desk@example.com\r\n\r\n" + body + "\r\n").encode()


class Desk(Agent):
    seen: ClassVar[list[InboundMessage]] = []
    gate: ClassVar[anyio.Event | None] = None

    async def on_message(self, message: InboundMessage) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.seen.append(message)


@asynccontextmanager
async def mx(database_url: str, **settings: Any) -> AsyncIterator[Fleet]:
    Desk.seen, Desk.gate = [], None
    async with Fleet(
        database_url=database_url, application="test", smtp_port=0, poll_interval=0.05, **settings
    ) as fleet:
        fleet.bind(Desk)
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com", agent=Desk)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            yield fleet
            tg.cancel_scope.cancel()


async def mail(fleet: Fleet, data: bytes, to: str = "desk@example.com") -> tuple[str, int, str]:
    """Send ``data`` over SMTP: the step that answered last, its code and text."""

    def run() -> tuple[str, int, str]:
        with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0, timeout=10) as client:
            client.ehlo("client.example.org")
            client.mail("ada@example.org")
            code, reply = client.rcpt(to)
            if code != 250:
                return ("rcpt", code, reply.decode())
            code, reply = client.data(data)
            return ("data", code, reply.decode())

    return await anyio.to_thread.run_sync(run)


async def mail_until(
    fleet: Fleet, data: bytes, until: Callable[[tuple[str, int, str]], bool]
) -> tuple[str, int, str]:
    """Send ``data`` again until the answer satisfies ``until`` (the MX looks a grant up
    anew at most a second later); that answer."""
    with anyio.fail_after(10):
        while not until(result := await mail(fleet, data)):  # noqa: ASYNC110 - a cache expiring
            await anyio.sleep(0.2)
    return result


async def stored(fleet: Fleet) -> list[Any]:
    """The messages rows of the fleet's application (folder, size, created_at...)."""
    app = fleet.application.id
    return await fleet.database.read(
        lambda conn: conn.execute(
            sa.select(messages_table)
            .where(messages_table.c.application_id == app)
            .order_by(messages_table.c.created_at)
        ).all()
    )


async def stored_bytes(fleet: Fleet, address: str = "desk@example.com") -> int:
    return (await fleet.grant(address)).stored_bytes


async def age(fleet: Fleet, ids: list[str], days: float) -> None:
    """Make messages ``days`` older than they are (the store's own clock, set back)."""

    def work(conn: Any) -> None:
        for mid in ids:
            row = conn.execute(
                sa.select(messages_table.c.created_at).where(messages_table.c.id == mid)
            ).one()
            conn.execute(
                sa.update(messages_table)
                .where(messages_table.c.id == mid)
                .values(created_at=row.created_at - timedelta(days=days))
            )

    await fleet.database.write(work)


# -- storage -----------------------------------------------------------------------------


async def test_stored_bytes_follow_what_is_stored_and_deleted(database_url: str) -> None:
    async with mx(database_url) as fleet:
        for n in range(3):
            assert (await mail(fleet, message(f"note {n}")))[1] == 250
        rows = await stored(fleet)
        assert await stored_bytes(fleet) == sum(row.size for row in rows) > 0
        deleted = await fleet.delete_messages("desk@example.com", [rows[0].id, "not-an-id"])
        assert deleted.deleted == (rows[0].id,)
        assert deleted.freed_bytes == rows[0].size
        assert deleted.stored_bytes == await stored_bytes(fleet) == rows[1].size + rows[2].size
        (event,) = await fleet.events(type="message.deleted")
        assert event.payload == {"grant_id": deleted.grant_id, "message_id": rows[0].id}
        assert [r.id for r in await stored(fleet)] == [rows[1].id, rows[2].id]


async def test_a_full_mailbox_is_refused_452_with_one_event_and_takes_mail_after_deletion(
    database_url: str,
) -> None:
    async with mx(database_url) as fleet:
        first = message("first")
        await fleet.update_policy("default", {"storage_limit_bytes": len(first) + 400})
        assert (await mail(fleet, first))[1] == 250
        (row,) = await stored(fleet)
        # no room for a second message: refused in DATA (no SIZE declared), then again
        for subject in ("second", "third"):
            step, code, reply = await mail(fleet, message(subject))
            assert (step, code) == ("data", 452)
            assert "4.2.2" in reply
        await wait_for_events(fleet, "grant.storage_full")
        (full,) = await fleet.events(type="grant.storage_full")  # once per crossing
        grant = await fleet.grant("desk@example.com")
        assert full.grant_id == grant.id
        assert full.payload["stored_bytes"] == row.size
        assert full.payload["storage_limit_bytes"] == len(first) + 400
        assert full.payload["refused_bytes"] > 400 - (row.size - len(first))

        deleted = await fleet.delete_messages(grant, [row.id])
        assert deleted.stored_bytes == 0
        (available,) = await fleet.events(type="grant.storage_available")
        assert available.payload["stored_bytes"] == 0

        await mail_until(fleet, message("second"), lambda answer: answer[1] == 250)
        assert await stored_bytes(fleet) == (await stored(fleet))[0].size


async def test_a_grant_already_full_is_refused_at_rcpt_and_marked_once(database_url: str) -> None:
    async with mx(database_url) as fleet:
        assert (await mail(fleet, message("first")))[1] == 250
        await fleet.update_policy("default", {"storage_limit_bytes": 10})  # now over it
        result = await mail_until(fleet, message("second"), lambda answer: answer[1] != 250)
        assert result[:2] == ("rcpt", 452)
        assert "4.2.2" in result[2]
        assert (await mail(fleet, message("third")))[:2] == ("rcpt", 452)
        await wait_for_events(fleet, "grant.storage_full")
        assert len(await fleet.events(type="grant.storage_full")) == 1


# -- retention ---------------------------------------------------------------------------


async def test_retention_deletes_spam_then_inbox_mail_on_the_clock_given(
    database_url: str,
) -> None:
    async with mx(database_url, retention_sweep_interval=0, retention_batch_size=2) as fleet:
        await fleet.update_policy(
            "default",
            {"spam_sensitivity": "high", "inbox_retention_days": 90, "spam_retention_days": 7},
        )
        for n in range(3):
            assert (await mail(fleet, message(f"ham {n}")))[1] == 250
        for n in range(2):
            assert (await mail(fleet, message(f"spam {n}", spammy=True)))[1] == 250
        await fleet.wait_idle()
        rows = await stored(fleet)
        assert sorted(r.folder for r in rows) == ["inbox"] * 3 + ["spam"] * 2
        total = await stored_bytes(fleet)
        now = datetime.now(UTC)

        assert (await fleet.sweep_retention(now=now + timedelta(days=6))).deleted == 0
        week = await fleet.sweep_retention(now=now + timedelta(days=8))
        assert (week.deleted, week.grants) == (2, 1)
        spam_bytes = sum(r.size for r in rows if r.folder == "spam")
        assert week.freed_bytes == spam_bytes
        assert await stored_bytes(fleet) == total - spam_bytes
        assert {r.folder for r in await stored(fleet)} == {"inbox"}

        later = await fleet.sweep_retention(now=now + timedelta(days=91))
        assert (later.deleted, later.batches) == (3, 2)  # batches of 2: 2 + 1
        assert await stored(fleet) == []
        assert await stored_bytes(fleet) == 0
        expired = await fleet.events(type="grant.messages_expired")
        assert sum(e.payload["deleted"] for e in expired) == 5
        assert sum(e.payload["freed_bytes"] for e in expired) == total


async def test_retention_keeps_sent_mail_and_mail_still_waiting_for_its_handler(
    database_url: str,
) -> None:
    async with mx(database_url, retention_sweep_interval=0) as fleet:
        Desk.gate = anyio.Event()  # the handler waits: the message stays queued
        assert (await mail(fleet, message("waiting")))[1] == 250
        sent = await fleet.send("desk@example.com", "bob@example.org", subject="Hi", text="Hi")
        assert sent.status == "queued"
        far = datetime.now(UTC) + timedelta(days=3650)
        assert (await fleet.sweep_retention(now=far)).deleted == 0
        Desk.gate.set()
        await fleet.wait_idle()
        assert (await fleet.sweep_retention(now=far)).deleted == 1
        assert [r.folder for r in await stored(fleet)] == ["sent"]


async def test_serve_sweeps_expired_mail_by_itself(database_url: str) -> None:
    async with mx(database_url, retention_sweep_interval=0.2) as fleet:
        for n in range(3):
            assert (await mail(fleet, message(f"note {n}")))[1] == 250
        await fleet.wait_idle()
        rows = await stored(fleet)
        await age(fleet, [rows[0].id, rows[1].id], days=400)  # past 365 days' retention
        with anyio.fail_after(10):
            while len(await stored(fleet)) != 1:  # noqa: ASYNC110 - the store is the truth
                await anyio.sleep(0.05)
        assert [r.id for r in await stored(fleet)] == [rows[2].id]
        assert await stored_bytes(fleet) == rows[2].size


async def test_one_worker_claims_each_round(database_url: str) -> None:
    async with Fleet(database_url=database_url, application="test") as fleet:
        scope = Scope(fleet.database, fleet.application.id)

        def claim(holder: str, now: float) -> Any:
            return lambda conn: storage.claim_sweep(
                Tx(conn, scope), now=now, interval=60, holder=holder
            )

        assert await fleet.database.write(claim("a", 1000.0))
        assert not await fleet.database.write(claim("b", 1000.0))
        assert not await fleet.database.write(claim("b", 1059.0))
        assert await fleet.database.write(claim("b", 1060.0))
        assert not await fleet.database.write(claim("a", 1061.0))


# -- limits at DATA ----------------------------------------------------------------------


async def test_the_daily_receive_limit_is_450_until_the_day_is_over(database_url: str) -> None:
    async with mx(database_url) as fleet:
        await fleet.update_policy("default", {"daily_receive_limit": 2})
        for n in range(2):
            assert (await mail(fleet, message(f"note {n}")))[1] == 250
        step, code, reply = await mail(fleet, message("one too many"))
        assert (step, code) == ("data", 450)
        assert "4.7.1" in reply
        assert "daily receive limit" in reply
        assert len(await stored(fleet)) == 2
        # yesterday's mail does not count: once the messages are a day old it is taken
        await age(fleet, [r.id for r in await stored(fleet)], days=1)
        await mail_until(fleet, message("one too many"), lambda answer: answer[1] == 250)


def with_attachments(*parts: tuple[str, str, bytes]) -> bytes:
    """A message with attachments ``(filename, content type, content)``."""
    msg = EmailMessage()
    msg["From"] = "Ada <ada@example.org>"
    msg["To"] = "desk@example.com"
    msg["Subject"] = "Files"
    msg["Date"] = "Thu, 03 Dec 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<files.{len(parts)}.{sum(len(p[2]) for p in parts)}@example.org>"
    msg.set_content("See attached.")
    for filename, content_type, content in parts:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes().replace(b"\n", b"\r\n")


async def test_attachment_limits_are_refused_at_data_with_precise_codes(
    database_url: str,
) -> None:
    async with mx(database_url) as fleet:
        await fleet.update_policy(
            "default",
            {
                "max_attachments": 2,
                "max_attachment_bytes": 1000,
                "allowed_attachment_types": ["application/pdf", "image/*"],
            },
        )
        pdf = ("a.pdf", "application/pdf", b"%PDF-1.4 " + b"x" * 100)
        png = ("b.png", "image/png", b"\x89PNG" + b"y" * 100)

        three = await mail(fleet, with_attachments(pdf, png, png))
        assert three[:2] == ("data", 552)
        assert "5.3.4 Too many attachments: 3" in three[2]

        big = await mail(fleet, with_attachments(("big.pdf", "application/pdf", b"z" * 1500)))
        assert big[:2] == ("data", 552)
        assert "5.3.4 Attachment big.pdf is too big: 1500 bytes" in big[2]

        exe = await mail(fleet, with_attachments(("run.exe", "application/x-msdownload", b"MZ")))
        assert exe[:2] == ("data", 554)
        assert "5.6.1 Attachment run.exe of type application/x-msdownload" in exe[2]

        assert await stored(fleet) == []
        assert (await mail(fleet, with_attachments(pdf, png)))[1] == 250
        await wait_until(lambda: len(Desk.seen) == 1)
        assert [a.filename for a in Desk.seen[0].attachments] == ["a.pdf", "b.png"]


async def test_mail_without_attachments_is_not_parsed_for_them(database_url: str) -> None:
    async with mx(database_url) as fleet:
        await fleet.update_policy("default", {"max_attachments": 0})
        assert (await mail(fleet, message("plain")))[1] == 250
        refused = await mail(fleet, with_attachments(("a.pdf", "application/pdf", b"%PDF")))
        assert refused[:2] == ("data", 552)


async def test_a_long_sweep_runs_in_batches_between_deliveries(database_url: str) -> None:
    async with Fleet(
        database_url=database_url, application="test", retention_batch_size=200, queue_limit=5000
    ) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision("desk@example.com")
        async with anyio.create_task_group() as tg:
            for n in range(1000):
                tg.start_soon(fleet.deliver, "desk@example.com", message(f"old {n}"))
        await age(fleet, [row.id for row in await stored(fleet)], days=400)
        await fleet.database.write(lambda conn: conn.execute(sa.delete(queue_table)))  # handled
        delivered: list[str] = []

        async def deliver_meanwhile() -> None:
            for n in range(20):
                delivered.append((await fleet.deliver("desk@example.com", message(f"new {n}"))).id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(deliver_meanwhile)
            report = await fleet.sweep_retention()
        assert (report.deleted, report.batches) == (1000, 6)  # 5 full batches, 1 empty
        assert sorted(r.id for r in await stored(fleet)) == sorted(delivered)
        assert await stored_bytes(fleet) == sum(r.size for r in await stored(fleet))
