"""The outbox loses nothing when a process is killed (SIGKILL) in the middle of a stream.

Two crashes, two promises of the outbox (docs/ARCHITECTURE.md, "What an
acknowledgement promises"):

* a process queuing sends is killed: every send it was answered ``queued`` for is in
  the outbox (the answer follows the commit);
* a worker sending a backlog to a real relay peer is killed: after its leases pass,
  another sender delivers the rest; every message reached the peer at least once,
  each is recorded sent exactly once (one ``message.sent``), none is left pending
  or leased, and the peer saw a message twice only when the killed worker had sent
  it but not yet recorded it (the at-least-once bound).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from fault_relay import faulty_relay
from test_relay_faults import LEASE, events_of, sending_worker, settled

from mailfleet import Fleet
from mailfleet.store.tables import messages_table, outbound_table
from sending import SENDER, SMALL, fleet_sending
from support import wait_until
from test_workers import stop_workers, wait_serving

pytestmark = pytest.mark.anyio

BACKLOG = 300
UNPACED = {**SMALL, "send_burst": 100_000, "warmup": {"grant": [], "domain": []}}

SENDING = """
import sys, anyio
from mailfleet import Fleet

async def main(url):
    async with Fleet(database_url=url, plugins="") as fleet:
        n = 0
        while True:
            result = await fleet.send(
                "sales@example.com", f"to{n}@example.org", subject=f"#{n}", text="Hello."
            )
            assert result.ok, result
            print(result.message_id, flush=True)
            n += 1

anyio.run(main, sys.argv[1])
"""


async def prepared(database_url: str) -> None:
    """The sending grant, its domain and its workspace (no pacing in the way)."""
    async with Fleet(database_url=database_url) as fleet:
        await fleet.add_domain("example.com")
        await fleet.create_workspace("outreach", policy=UNPACED)
        await fleet.provision(SENDER, workspace="outreach")


async def queued_message_ids(fleet: Fleet) -> set[str]:
    """The Message-IDs of every message in the outbox."""
    return set(
        await fleet.database.read(
            lambda conn: (
                conn.execute(
                    sa.select(messages_table.c.message_id).join(
                        outbound_table, outbound_table.c.message_id == messages_table.c.id
                    )
                )
                .scalars()
                .all()
            )
        )
    )


async def test_every_send_answered_queued_survives_a_kill_of_its_process(
    database_url: str,
) -> None:
    await prepared(database_url)
    process = subprocess.Popen(  # noqa: ASYNC220 - started once, read from a thread
        [sys.executable, "-c", SENDING, database_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    answered: list[str] = []
    try:
        with anyio.fail_after(60):
            while len(answered) < 200:
                line = await anyio.to_thread.run_sync(process.stdout.readline)
                assert line, process.communicate()[1].decode()[-2000:]
                answered.append(line.decode().strip())
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    async with Fleet(database_url=database_url) as fleet:
        stored = await queued_message_ids(fleet)
    assert all(answered)
    assert set(answered) <= stored  # every "queued" answer was committed first


async def test_a_worker_killed_while_sending_a_backlog_loses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    await prepared(database_url)
    async with Fleet(database_url=database_url) as fleet:
        queued = []
        for n in range(BACKLOG):
            result = await fleet.send(SENDER, f"to{n}@example.org", subject=f"#{n}", text="Hi.")
            assert result.ok, result
            queued.append(result.message_id)
    async with faulty_relay() as relay:
        worker = sending_worker(database_url, tmp_path, relay)
        try:
            await wait_serving([worker])
            await wait_until(lambda: len(relay.accepted) >= BACKLOG // 3, within=60)
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            await stop_workers([worker])
        assert worker.process.returncode == -signal.SIGKILL
        before_kill = Counter(relay.accepted_ids())
        assert 0 < len(before_kill) < BACKLOG  # killed mid-stream

        async with fleet_sending(database_url, relay, policy=UNPACED) as fleet:
            await settled(fleet, BACKLOG, within=LEASE + 60)
            recorded = {o.status for o in await fleet.outbox(limit=10_000)}
            sent = Counter(p["header_message_id"] for p in await events_of(fleet, "message.sent"))
            leased = await fleet.database.read(
                lambda conn: conn.execute(
                    sa.select(sa.func.count()).where(outbound_table.c.lease_owner.is_not(None))
                ).scalar_one()
            )
    accepted = Counter(relay.accepted_ids())
    assert set(accepted) == set(queued)  # none lost
    assert recorded == {"sent"}
    assert sent == Counter(queued)  # recorded sent exactly once each
    assert leased == 0
    # A message reached the peer twice only if the killed worker had sent it already.
    twice = {m for m, n in accepted.items() if n > 1}
    assert twice <= set(before_kill)
    assert max(accepted.values()) <= 2
