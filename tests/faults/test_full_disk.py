"""A full disk under a serving fleet (issue 16, point 2).

The SQLite store lives on a small tmpfs the test mounts (as root) and fills
with a filler file while the real MX, the HTTP API, the worker and the sender
run, the sender against a real aiosmtpd relay peer. While the disk is full:
the MX answers ``451 4.3.0`` to DATA and the session goes on, the API answers
``503 store_unavailable``, each loop logs one WARNING and backs off, and
nothing is half written. Once the filler is deleted everything resumes by
itself and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_thread
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from diskfull import SmallDisk, small_disk_at

from apiserver import api_server
from mailfleet import Agent, Fleet, InboundMessage
from mailfleet.model.errors import StoreUnavailable
from relay import RelayPeer, relay_peer
from sending import FREE
from support import wait_until

pytestmark = pytest.mark.anyio

DESK = "desk@example.com"
BODY = b"".join(b"line %05d of a message that takes room on the disk\r\n" % i for i in range(600))


SMALL_FROM = 200
"""Messages numbered from here are small: they use up the last room large ones left."""


def message(n: int) -> bytes:
    """Message ``n`` (each its own source key at the MX): about 30 KiB, or a few
    bytes from :data:`SMALL_FROM` on."""
    body = BODY if n < SMALL_FROM else b"Hi.\r\n"
    return (
        b"From: Ada <ada@example.org>\r\nTo: desk@example.com\r\n"
        b"Subject: note %d\r\nMessage-ID: <note-%d@example.org>\r\n\r\n" % (n, n) + body
    )


def truncate_wal(path: Path) -> None:
    """Checkpoint the WAL and truncate it to nothing: the room it held is given back.

    A WAL that was checkpointed is written again from its start, so while its file is
    larger than what is written, commits need no new room: a full disk fails them
    only once that room is used up (the test uses it up all the same, with mail).
    """
    conn = sqlite3.connect(path, timeout=30)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        conn.close()


class Desk(Agent):
    """Answers every message; waits at ``gate`` (when set) before it does."""

    handled: ClassVar[set[str]] = set()
    waiting: ClassVar[int] = 0
    gate: ClassVar[anyio.Event | None] = None

    async def on_message(self, message: InboundMessage) -> None:
        if Desk.gate is not None:
            Desk.waiting += 1
            await Desk.gate.wait()
        await self.reply(message, text="Noted.")
        Desk.handled.add(message.id)


class HeldRelay(RelayPeer):
    """A relay peer that holds each DATA until ``gate`` is set."""

    gate: asyncio.Event
    holding: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.holding += 1
        await self.gate.wait()
        self.holding -= 1
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 16 MiB tmpfs in the test's folder (mounted as root; skipped otherwise, but
    under CI, where it fails)."""
    with small_disk_at(tmp_path / "disk", size="16m") as disk:
        yield disk


def smtp_session(port: int, work: Any) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        return work(client)


def deliver(client: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """MAIL, RCPT and DATA of one message: the DATA reply (or the first refusal)."""
    code, reply = client.mail("ada@example.org")
    assert code == 250, reply
    code, reply = client.rcpt(DESK)
    if code != 250:
        client.rset()
        return code, reply
    return client.data(data)


def counts(path: Path) -> dict[str, int]:
    """What the store holds, read beside the fleet (reads need no room)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "grants": one("SELECT count(*) FROM grants"),
            "inbound": one("SELECT count(*) FROM messages WHERE direction = 'in'"),
            "outbound": one("SELECT count(*) FROM outbound"),
            "outbound_messages": one("SELECT count(*) FROM messages WHERE direction = 'out'"),
            "queued": one("SELECT count(*) FROM queue_entries"),
            # a message of a grant's mail that is neither queued nor handled: half written
            "unqueued": one(
                "SELECT count(*) FROM messages m WHERE direction = 'in' AND NOT EXISTS "
                "(SELECT 1 FROM queue_entries q WHERE q.message_id = m.id)"
            ),
            "dead": one("SELECT count(*) FROM queue_entries WHERE status = 'dead'"),
        }
    finally:
        conn.close()


def ids_of(path: Path, subjects: list[str]) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        marks = ", ".join("?" * len(subjects))
        rows = conn.execute(
            f"SELECT subject, id FROM messages WHERE direction = 'in' AND subject IN ({marks})",
            subjects,
        ).fetchall()
        return dict(rows)
    finally:
        conn.close()


def outage_records(caplog: pytest.LogCaptureFixture, level: int) -> dict[str, int]:
    """How many outage lines (store/outage.py) of ``level`` each loop logged."""
    found: dict[str, int] = {}
    for record in caplog.records:
        what = getattr(record, "outage", None)
        if what is not None and record.levelno == level:
            found[what] = found.get(what, 0) + 1
    return found


def store_tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records that carry the traceback of a store outage (there must be none)."""
    found = []
    for record in caplog.records:
        if not record.exc_info or record.exc_info[1] is None:
            continue
        error: BaseException | None = record.exc_info[1]
        while error is not None:
            if isinstance(error, StoreUnavailable | sqlite3.OperationalError):
                found.append(record)
                break
            error = error.__cause__ or error.__context__
    return found


async def test_a_full_disk_defers_mail_refuses_writes_and_everything_resumes(
    small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailfleet")
    db = small_disk.path / "mailfleet.db"
    Desk.handled, Desk.waiting, Desk.gate = set(), 0, None
    held = HeldRelay()
    held.gate = asyncio.Event()
    held.gate.set()
    async with (
        relay_peer(held) as peer,
        Fleet(
            database_url=f"sqlite:///{db}",
            smtp_port=0,
            poll_interval=0.05,
            relay_host="127.0.0.1",
            relay_port=peer.port,
            relay_starttls=False,
            webhook_delivery=False,
        ) as fleet,
    ):
        fleet.bind(Desk)
        await fleet.add_domain("example.com")
        await fleet.update_policy("default", FREE)
        desk = await fleet.provision(DESK, agent=Desk)
        async with anyio.create_task_group() as tg, api_server(fleet, others=()) as api:
            await tg.start(fleet.serve)
            port = fleet.smtp_port
            assert port is not None
            client = await api.client()

            async def mx(work: Any) -> Any:
                return await anyio.to_thread.run_sync(smtp_session, port, work)

            # -- before: a message in, handled, its reply relayed -------------------------
            code, reply = await mx(lambda c: deliver(c, message(0)))
            assert code == 250, reply
            await wait_until(lambda: len(Desk.handled) == 1 and len(peer.received) == 1)

            # Work in flight when the disk fills: a handler running (its completion and its
            # reply still to write) and a send at the relay (its result still to record).
            Desk.gate = anyio.Event()
            held.gate.clear()
            assert (await mx(lambda c: deliver(c, message(1))))[0] == 250
            sent = await fleet.send(DESK, "bob@example.net", subject="Before", text="Hello.")
            assert sent.ok, sent
            await wait_until(lambda: Desk.waiting == 1 and held.holding == 1)
            before = counts(db)

            # -- the disk fills ----------------------------------------------------------
            truncate_wal(db)
            small_disk.fill()
            assert small_disk.free_bytes() == 0

            def until_refused(client: smtplib.SMTP) -> dict[str, Any]:
                """Large messages, then small ones, until the MX refuses one: whatever
                room the store's files still held is used up."""
                acknowledged: list[int] = []
                refused: tuple[int, int, bytes] | None = None
                for first in (2, SMALL_FROM):
                    for n in range(first, first + 150):
                        code, reply = deliver(client, message(n))
                        if code != 250:
                            refused = (n, code, reply)
                            break
                        acknowledged.append(n)  # there was room left in the store's files
                    else:
                        raise AssertionError("the MX took 150 messages on a full disk")
                assert refused is not None
                # the session goes on: the next commands are answered as usual
                after = [client.noop()[0], client.rset()[0], client.mail("ada@example.org")[0]]
                after.append(client.rcpt(DESK)[0])  # RCPT reads: a full disk still reads
                again = client.data(message(refused[0]))
                return {
                    "acknowledged": acknowledged,
                    "refused": refused,
                    "after": after,
                    "again": again,
                }

            full = await mx(until_refused)
            n_refused, code, reply = full["refused"]
            assert (code, reply[:9]) == (451, b"4.3.0 Mai"), reply
            assert b"store unavailable" in reply
            assert full["after"] == [250, 250, 250, 250]
            assert full["again"][0] == 451
            assert full["again"][1].startswith(b"4.3.0")

            # -- the API answers 503 with a problem body -------------------------------------
            created = await client.post("/v1/grants", json={"address": "new@example.com"})
            assert created.status_code == 503, created.text
            assert created.headers["content-type"] == "application/problem+json"
            problem = created.json()
            assert problem["code"] == "store_unavailable"
            assert "disk is full" in problem["detail"]
            send = await client.post(
                f"/v1/grants/{desk.id}/messages",
                json={"to": ["carol@example.net"], "subject": "During", "text": "Hi."},
            )
            assert send.status_code == 503, send.text
            assert send.json()["code"] == "store_unavailable"

            # -- the loops meet the full disk: they back off and log it once ---------------
            Desk.gate.set()
            held.gate.set()
            await wait_until(lambda: len(peer.received) == 2, within=10)  # the held send
            wanted = {"recording handler results", "recording send results"}
            await wait_until(
                lambda: wanted <= set(outage_records(caplog, logging.WARNING)), within=10
            )
            await anyio.sleep(1.5)  # long enough for a dozen tries at the first delays
            warnings = outage_records(caplog, logging.WARNING)
            assert all(count <= 2 for count in warnings.values()), warnings
            retries = [
                r
                for r in caplog.records
                if r.levelno == logging.DEBUG and "still unavailable" in r.getMessage()
            ]
            assert retries, "the loops did not try again"
            assert store_tracebacks(caplog) == []

            # -- nothing half written -------------------------------------------------------
            during = counts(db)
            acknowledged = full["acknowledged"]
            assert during["grants"] == before["grants"]  # no grant half created
            assert during["outbound"] == before["outbound"] == 2  # the 503 send: nothing
            assert during["outbound_messages"] == before["outbound_messages"]
            assert during["inbound"] == before["inbound"] + len(acknowledged)
            assert during["unqueued"] == 1, (before, during)  # the first one, handled before
            assert during["dead"] == 0
            subjects = [f"note {n}" for n in (1, *acknowledged, n_refused)]
            assert set(ids_of(db, subjects)) == set(subjects[:-1])  # no trace of the 451 one

            # -- space comes back: everything resumes by itself ----------------------------
            small_disk.free()
            code, reply = await mx(lambda c: deliver(c, message(n_refused)))
            assert code == 250, reply
            created = await client.post("/v1/grants", json={"address": "new@example.com"})
            assert created.status_code == 201, created.text
            send = await client.post(
                f"/v1/grants/{desk.id}/messages",
                json={"to": ["carol@example.net"], "subject": "After", "text": "Hi."},
            )
            assert send.status_code == 202, send.text

            stored = ids_of(db, [f"note {n}" for n in (0, 1, *acknowledged, n_refused)])
            everything = set(stored.values())
            # every message handled and answered, the held send and the API's sent
            replies = len(everything)
            await wait_until(
                lambda: Desk.handled >= everything and len(peer.received) >= replies + 2,
                within=30,
            )
            await wait_until(lambda: counts(db)["queued"] == 0, within=15)
            with anyio.fail_after(15):
                while {o.status for o in await fleet.outbox(limit=1000)} != {"sent"}:  # noqa: ASYNC110 - polling the store
                    await anyio.sleep(0.05)
            assert len(await fleet.outbox(limit=1000)) == replies + 2

            after = counts(db)
            assert after["dead"] == 0
            assert after["grants"] == before["grants"] + 1
            ended = outage_records(caplog, logging.INFO)
            started = outage_records(caplog, logging.WARNING)
            assert set(started) <= set(ended), (started, ended)
            assert store_tracebacks(caplog) == []
            tg.cancel_scope.cancel()


async def test_the_wal_room_left_takes_mail_until_it_is_used_up_and_none_is_lost(
    small_disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    """What SQLite does on a full disk: a WAL that was checkpointed is written again from
    its start, so commits go on into the room its file holds; the checkpoint, which must
    grow the database file, fails first (logged once); commits fail once the room is
    used up. Every message answered 250 meanwhile is stored, and handled afterwards."""
    caplog.set_level(logging.DEBUG, logger="mailfleet")
    db = small_disk.path / "mailfleet.db"
    Desk.handled, Desk.waiting, Desk.gate = set(), 0, None
    async with Fleet(database_url=f"sqlite:///{db}", smtp_port=0, poll_interval=0.05) as fleet:
        fleet.bind(Desk)
        await fleet.add_domain("example.com")
        await fleet.provision(DESK, agent=Desk)
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            port = fleet.smtp_port
            assert port is not None

            def send_all(numbers: range) -> list[int]:
                def work(client: smtplib.SMTP) -> list[int]:
                    return [deliver(client, message(n))[0] for n in numbers]

                return smtp_session(port, work)

            # some 1.2 MiB through the WAL, then checkpointed: its file keeps the room
            codes = await anyio.to_thread.run_sync(send_all, range(40))
            assert set(codes) == {250}
            await wait_until(lambda: len(Desk.handled) == 40, within=30)
            conn = sqlite3.connect(db, timeout=30)
            try:
                conn.execute("PRAGMA wal_checkpoint(FULL)").fetchall()
            finally:
                conn.close()
            assert db.with_name(db.name + "-wal").stat().st_size > 1 << 19

            small_disk.fill()

            def until_refused(client: smtplib.SMTP) -> tuple[list[int], int, bytes]:
                acknowledged = []
                for n in range(40, SMALL_FROM):
                    code, reply = deliver(client, message(n))
                    if code != 250:
                        return acknowledged, code, reply
                    acknowledged.append(n)
                raise AssertionError("the MX took 160 messages on a full disk")

            acknowledged, code, reply = await anyio.to_thread.run_sync(
                smtp_session, port, until_refused
            )
            assert acknowledged, "no room was left in the WAL"
            assert (code, reply[:5]) == (451, b"4.3.0")
            refused = acknowledged[-1] + 1
            subjects = [f"note {n}" for n in (*acknowledged, refused)]
            assert set(ids_of(db, subjects)) == set(subjects[:-1])  # each 250 is stored

            small_disk.free()
            codes = await anyio.to_thread.run_sync(send_all, range(refused, refused + 1))
            assert codes == [250]
            stored = ids_of(db, [f"note {n}" for n in range(refused + 1)])
            assert len(stored) == refused + 1
            await wait_until(lambda: Desk.handled >= set(stored.values()), within=30)
            # all handled and completed, none left behind
            await wait_until(lambda: counts(db)["queued"] == 0, within=15)
            assert counts(db)["unqueued"] == refused + 1
            started = outage_records(caplog, logging.WARNING)
            assert set(started) <= set(outage_records(caplog, logging.INFO)), started
            assert store_tracebacks(caplog) == []
            tg.cancel_scope.cancel()
