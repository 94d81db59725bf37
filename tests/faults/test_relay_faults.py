"""A misbehaving relay (issue 16, point 4): the sender against a peer that fails on cue.

Each test scripts one fault into :mod:`fault_relay` and sends through a real
fleet. What counts is what the peer really accepted (answered 250 to) and what
the store says: every message ends ``sent`` with one ``message.sent`` event and
was accepted once, or (a reply lost, a sender killed after the 250) twice
within the at-least-once bound of docs/ARCHITECTURE.md; none is lost, none is
recorded sent that the peer did not accept, none stays leased.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from fault_relay import Fault, FaultyRelay, Message, faulty_relay

from mailfleet import Fleet, SendResult
from mailfleet.store.tables import outbound_table
from sending import SENDER, SMALL, fleet_sending
from support import wait_for_events, wait_until
from test_workers import WorkerProcess, start_worker, stop_workers, wait_serving

pytestmark = pytest.mark.anyio

TIMEOUT = 0.5
"""relay_timeout of these tests: a stall is noticed in half a second."""
LEASE = 2.0
"""send_lease: the smallest that relay_timeout allows (4 x)."""
SCHEDULE = [0.3] * 6
"""retry_schedule: long enough (1.8 s) for a relay to come back within it."""
FAST: dict[str, Any] = {
    "relay_timeout": TIMEOUT,
    "send_lease": LEASE,
    "retry_schedule": SCHEDULE,
}


def sending_worker(database_url: str, tmp_path: Path, relay: FaultyRelay) -> WorkerProcess:
    """A ``mailfleet worker`` process (named ``doomed``) sending to ``relay`` with this
    file's short timeout and lease."""
    journal = tmp_path / "journal"
    journal.mkdir()
    env = {
        "MAILFLEET_RELAY_HOST": "127.0.0.1",
        "MAILFLEET_RELAY_PORT": str(relay.port),
        "MAILFLEET_RELAY_STARTTLS": "false",
        "MAILFLEET_RELAY_TIMEOUT": str(TIMEOUT),
        "MAILFLEET_SEND_LEASE": str(LEASE),
    }
    return start_worker(database_url, journal, "doomed", application="default", env=env)


async def send(fleet: Fleet, count: int) -> list[SendResult]:
    results = []
    for n in range(count):
        result = await fleet.send(SENDER, f"to{n}@example.org", subject=f"#{n}", text="Hello.")
        assert result.ok, result
        results.append(result)
    return results


async def settled(fleet: Fleet, count: int, *, within: float = 15.0) -> None:
    """Wait until ``count`` messages have their final state (sent or bounced)."""

    async def final() -> bool:
        listed = await fleet.outbox(limit=1000)
        return len(listed) == count and all(o.status in ("sent", "bounced") for o in listed)

    with anyio.fail_after(within):
        while not await final():  # noqa: ASYNC110 - polling the store
            await anyio.sleep(0.02)


async def events_of(fleet: Fleet, kind: str) -> list[dict[str, Any]]:
    return [e.payload for e in await fleet.events(type=kind, limit=1000)]


async def assert_sent_once(
    fleet: Fleet, relay: FaultyRelay, results: list[SendResult], *, deferred: int
) -> None:
    """Every message accepted by the peer exactly once and recorded sent once, with
    ``deferred`` deferrals in all (each a 4xx, never a bounce); no lease left."""
    ids = [r.message_id for r in results]
    assert sorted(relay.accepted_ids(), key=str) == sorted(ids, key=str)
    outbox = await fleet.outbox(limit=1000)
    assert {o.status for o in outbox} == {"sent"}
    sent = await events_of(fleet, "message.sent")
    assert sorted(p["header_message_id"] for p in sent) == sorted(ids, key=str)
    assert await events_of(fleet, "message.bounced") == []
    delays = await events_of(fleet, "message.deferred")
    assert len(delays) == deferred, [(p["recipients"], p["response"]) for p in delays]
    assert all(400 <= p["code"] < 500 for p in delays), delays
    leased = await fleet.database.read(
        lambda conn: conn.execute(
            sa.select(sa.func.count()).where(outbound_table.c.lease_owner.is_not(None))
        ).scalar_one()
    )
    assert leased == 0


# -- connections refused ---------------------------------------------------------------


async def test_a_relay_refusing_connections_gets_the_mail_once_it_listens(
    database_url: str,
) -> None:
    async with (
        faulty_relay(listening=False) as relay,
        fleet_sending(database_url, relay, **FAST) as fleet,
    ):
        results = await send(fleet, 3)
        await wait_for_events(fleet, "message.deferred", count=3)
        assert relay.connections == 0
        assert {o.status for o in await fleet.outbox()} == {"pending"}  # not sent, not lost
        first = (await events_of(fleet, "message.deferred"))[-1]
        assert first["code"] == 421
        assert "relay unreachable" in first["response"]
        assert first["attempt"] == 1
        await relay.start()
        await settled(fleet, 3)
        deferred = len(await events_of(fleet, "message.deferred"))
        assert 3 <= deferred < 3 * len(SCHEDULE)
        await assert_sent_once(fleet, relay, results, deferred=deferred)


# -- a connection cut mid-DATA ---------------------------------------------------------


async def test_a_connection_dropped_mid_data_is_retried_and_never_counted_sent(
    database_url: str,
) -> None:
    async with (
        faulty_relay(Fault.DROP_MID_DATA) as relay,
        fleet_sending(database_url, relay, **FAST) as fleet,
    ):
        results = await send(fleet, 1)
        await wait_for_events(fleet, "message.deferred")
        (deferred,) = await events_of(fleet, "message.deferred")
        assert deferred["code"] == 421
        assert relay.dropped == 1
        await settled(fleet, 1)
        await assert_sent_once(fleet, relay, results, deferred=1)
        assert relay.connections == 2  # the cut one, and a fresh one for the retry


# -- 421 and close --------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.GREETING_421, Fault.MAIL_421, Fault.DATA_421])
async def test_a_421_and_close_defers_the_message_and_it_is_sent_on_the_retry(
    database_url: str, fault: Fault
) -> None:
    async with (
        faulty_relay(fault) as relay,
        fleet_sending(database_url, relay, **FAST) as fleet,
    ):
        results = await send(fleet, 1)
        await settled(fleet, 1)
        assert relay.faults == []
        await assert_sent_once(fleet, relay, results, deferred=1)
        (deferred,) = await events_of(fleet, "message.deferred")
        assert deferred["code"] == 421
        assert "4.3.2" in deferred["response"]


async def test_a_reused_connection_the_relay_closed_is_replaced_at_once(
    database_url: str,
) -> None:
    """The relay closes a pooled connection (after a 250, or with a 421 at the next
    MAIL): the next message takes a fresh connection, with no deferral."""
    async with (
        faulty_relay() as relay,
        fleet_sending(database_url, relay, **FAST, relay_pool_size=1) as fleet,
    ):
        results = []
        for n, fault in enumerate([Fault.CLOSE_AFTER_250, None, Fault.MAIL_421]):
            relay.faults = [fault] if fault else []
            results += await send(fleet, 1)
            await wait_until(lambda n=n: len(relay.accepted) == n + 1)
        await settled(fleet, 3)
        assert relay.faults == []
        await assert_sent_once(fleet, relay, results, deferred=0)
        assert relay.connections == 3  # the first closed after its 250, the second by a 421


# -- stalls -----------------------------------------------------------------------------


async def test_a_relay_that_never_greets_times_out_and_the_message_is_retried(
    database_url: str,
) -> None:
    async with (
        faulty_relay(Fault.GREETING_STALL) as relay,
        fleet_sending(database_url, relay, **FAST) as fleet,
    ):
        started = time.monotonic()
        results = await send(fleet, 1)
        await wait_for_events(fleet, "message.deferred")
        assert time.monotonic() - started >= TIMEOUT
        (deferred,) = await events_of(fleet, "message.deferred")
        assert deferred["code"] == 421
        await settled(fleet, 1)
        await assert_sent_once(fleet, relay, results, deferred=1)


async def test_a_relay_that_never_answers_the_end_of_data_gets_the_message_again(
    database_url: str,
) -> None:
    """The reply lost after the whole message went: the sender cannot know whether
    the relay took it, so it defers and sends it again (the at-least-once case)."""
    async with (
        faulty_relay(Fault.STALL_AFTER_DATA) as relay,
        fleet_sending(database_url, relay, **FAST) as fleet,
    ):
        results = await send(fleet, 1)
        await settled(fleet, 1)
        assert [m.header("Message-ID") for m in relay.unanswered] == [results[0].message_id]
        await assert_sent_once(fleet, relay, results, deferred=1)
        (deferred,) = await events_of(fleet, "message.deferred")
        assert deferred["code"] == 451
        assert relay.accepted[0].at - relay.unanswered[0].at >= TIMEOUT + SCHEDULE[0] - 0.05


async def test_a_stalling_relay_with_a_backlog_never_gets_a_message_twice_in_flight(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One connection, a relay that stalls on five messages in a row: the others
    wait longer than their lease allows. None is taken again while in flight (its
    lease expired), each is accepted once, and no lease is left behind."""
    caplog.set_level(logging.INFO, "mailfleet")
    async with (
        faulty_relay(*[Fault.STALL_AFTER_DATA] * 5) as relay,
        fleet_sending(database_url, relay, **FAST, relay_pool_size=1) as fleet,
    ):
        results = await send(fleet, 8)
        await settled(fleet, 8, within=30)
        assert len(relay.unanswered) == 5
        delays = len(await events_of(fleet, "message.deferred"))
        assert delays >= 5
        await assert_sent_once(fleet, relay, results, deferred=delays)
    # those that waited past half their lease for the one connection were given back
    assert any("gave back" in r.getMessage() for r in caplog.records), [
        r.getMessage() for r in caplog.records
    ]


# -- the sender dies between the relay's 250 and its commit -------------------------------


async def test_a_sender_killed_after_the_relays_250_sends_again_after_its_lease(
    database_url: str, tmp_path: Path
) -> None:
    """The worker process that sent the message is frozen when the relay has read
    the message, the relay answers 250, and the process is killed: nothing was
    recorded. Once the lease passes, another sender sends it again (the relay sees
    it twice, the at-least-once bound), and the store records it sent once."""
    async with faulty_relay() as relay:
        async with Fleet(database_url=database_url) as fleet:
            await fleet.add_domain("example.com")
            await fleet.create_workspace("outreach", policy=SMALL)
            await fleet.provision(SENDER, workspace="outreach")
            results = await send(fleet, 1)

        worker = sending_worker(database_url, tmp_path, relay)
        killed: list[float] = []

        def freeze(message: Message) -> None:
            os.kill(worker.pid, signal.SIGSTOP)  # it cannot read the 250 now

        def kill(message: Message) -> None:
            os.kill(worker.pid, signal.SIGKILL)
            killed.append(time.monotonic())

        relay.on_end_of_data, relay.after_250 = freeze, kill
        try:
            await wait_serving([worker])
            await wait_until(lambda: bool(killed), within=20)
        finally:
            await stop_workers([worker])
        assert worker.process.returncode == -signal.SIGKILL
        relay.on_end_of_data = relay.after_250 = None
        assert relay.accepted_ids() == [results[0].message_id]

        async with fleet_sending(database_url, relay, **FAST) as fleet:
            (pending,) = await fleet.outbox()
            assert pending.status == "pending"  # accepted by the relay, not recorded sent
            assert await events_of(fleet, "message.sent") == []
            await settled(fleet, 1, within=LEASE + 10)
            assert relay.accepted_ids() == [results[0].message_id] * 2
            resent = relay.accepted[1].at - killed[0]
            assert LEASE - 0.5 <= resent <= LEASE + 5, resent  # not before the lease ends
            (sent,) = await events_of(fleet, "message.sent")
            assert sent["header_message_id"] == results[0].message_id
            assert await events_of(fleet, "message.deferred") == []
