"""Worker processes on one database, one of them killed with SIGKILL mid-run.

Every message must be handled, each grant's messages in order, and never two
handlers of one grant at once, across processes. The second test adds scopes:
two applications, two agent classes within one, each served by processes of
its own, and each application's replies sent through its own relay; it runs
on PostgreSQL and again on one SQLite file (WAL, writers wait for each other).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email import message_from_bytes
from pathlib import Path
from typing import NamedTuple

import anyio
import anyio.to_thread
import pytest
import sqlalchemy as sa

from mailfleet import Agent, Fleet
from mailfleet.store.tables import leases_table, outbound_table
from relay import RelayPeer, relay_peer
from support import wait_until
from worker_app import Journal, OtherJournal

pytestmark = pytest.mark.anyio

TESTS = Path(__file__).resolve().parent


# -- worker processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerProcess:
    """A ``mailfleet worker`` child: its id (MAILFLEET_WORKER_ID), scope and process."""

    name: str
    application: str
    agent: type[Agent]
    process: subprocess.Popen[bytes]
    stderr: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")


def start_worker(
    url: str,
    journal: Path,
    name: str,
    *,
    application: str = "test",
    agent: type[Agent] = Journal,
    env: Mapping[str, str] | None = None,
) -> WorkerProcess:
    environment = {
        **os.environ,
        # The application is given by the environment (not --application), so
        # that the agents can journal the one their process serves.
        "MAILFLEET_APPLICATION": application,
        "MAILFLEET_TEST_JOURNAL": str(journal),
        # Short, for takeovers within seconds; its margin (a fifth) is what a starved
        # process has to notice a lapsed lease: 0.3 s was not enough on a loaded machine.
        "MAILFLEET_LEASE_TTL": "3",
        "MAILFLEET_POLL_INTERVAL": "0.05",
        "MAILFLEET_WORKER_ID": name,
        "MAILFLEET_SHUTDOWN_GRACE": "2",
        **(env or {}),
    }
    command = ["--database-url", url, "worker", f"{TESTS / 'worker_app.py'}:{agent.__name__}"]
    stderr = journal.parent / f"{name}.stderr"  # a file: a full pipe would block the child
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailfleet", *command],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    return WorkerProcess(name, application, agent, process, stderr)


async def wait_serving(workers: Iterable[WorkerProcess]) -> None:
    """Wait until each worker says it serves (its signal handlers are in place by then)."""
    for worker in workers:
        assert worker.process.stdout is not None
        with anyio.fail_after(60):
            line = await anyio.to_thread.run_sync(
                worker.process.stdout.readline, abandon_on_cancel=True
            )
        assert b"serving" in line, (line, worker.errors())


async def stop_workers(workers: Iterable[WorkerProcess]) -> None:
    """SIGTERM the workers still running and reap them all; SIGKILL any that hangs.

    The waiting runs in a thread: the event loop must go on serving the relays
    the workers say goodbye to as they stop.
    """
    workers = list(workers)
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    with anyio.CancelScope(shield=True):
        for worker in workers:
            await anyio.to_thread.run_sync(_reap, worker.process)


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def assert_stopped_cleanly(workers: Iterable[WorkerProcess], victim: WorkerProcess) -> None:
    assert victim.process.returncode == -signal.SIGKILL
    for worker in workers:
        if worker is not victim:
            errors = worker.errors()
            assert worker.process.returncode == 0, errors
            assert "Traceback" not in errors, errors
            assert "does not serve grant" not in errors, errors  # claims take served grants only


# -- journals --------------------------------------------------------------------------------


class Entry(NamedTuple):
    """One journal line: a handler of ``grant`` started or ended message ``seq``."""

    grant: str
    seq: int
    kind: str
    agent: str
    application: str
    at: int
    pid: int


class Run(NamedTuple):
    """One handler run of a grant's message; ``done`` is false if it never ended
    (killed, or interrupted by its worker: a ``cancel`` line)."""

    start: int
    end: int
    seq: int
    pid: int
    done: bool


def read_journals(folder: Path) -> list[Entry]:
    entries = []
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            grant, seq, kind, agent, application, at, pid = line.split()
            entries.append(Entry(grant, int(seq), kind, agent, application, int(at), int(pid)))
    return entries


def journal_lines(folder: Path, workers: Iterable[WorkerProcess] | None = None) -> int:
    paths = folder.glob("*.log") if workers is None else (folder / f"{w.pid}.log" for w in workers)
    return sum(len(p.read_text().splitlines()) for p in paths if p.exists())


def handler_runs(entries: list[Entry], victim: int, killed_at: int) -> dict[str, list[Run]]:
    """Each grant's handler runs, in start order; the victim's unfinished ones end at its kill."""
    runs: dict[str, list[Run]] = defaultdict(list)
    starts: dict[tuple[str, int, int], int] = {}
    for entry in sorted(entries, key=lambda e: e.at):
        key = (entry.grant, entry.seq, entry.pid)
        if entry.kind == "start":
            starts[key] = entry.at
        else:
            done = entry.kind == "end"
            runs[entry.grant].append(Run(starts.pop(key), entry.at, entry.seq, entry.pid, done))
    for (grant, seq, pid), at in starts.items():
        assert pid == victim, "only the killed worker may leave a handler unfinished"
        runs[grant].append(Run(at, killed_at, seq, pid, False))
    return {grant: sorted(grant_runs) for grant, grant_runs in runs.items()}


def assert_handled_in_order(grant: str, runs: list[Run], per_grant: int) -> None:
    # nothing lost: every message ran to its end at least once
    assert {run.seq for run in runs if run.done} == set(range(per_grant)), grant
    # never two handlers of one grant at once, across all processes
    for earlier, later in itertools.pairwise(runs):
        assert later.start >= earlier.end, f"overlapping handlers for grant {grant}"
    # in order: the first completions of a grant's messages come in sequence
    first_done: dict[int, int] = {}
    for run in runs:
        if run.done:
            first_done.setdefault(run.seq, run.end)
    assert sorted(first_done, key=first_done.__getitem__) == list(range(per_grant)), grant


def taken_over(runs: Iterable[list[Run]], victim: int) -> int:
    """How many grants the killed worker ran that another worker went on with."""
    return sum(1 for r in runs if victim in {run.pid for run in r} and r[-1].pid != victim)


# -- one application, one class --------------------------------------------------------------

GRANTS = 24
PER_GRANT = 25


@pytest.mark.postgres
async def test_three_workers_one_killed(postgres_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    # It never serves; its agents say what wait_idle waits for (with none, nothing).
    async with Fleet(database_url=postgres_url, application="test", agents=[Journal]) as fleet:
        await fleet.add_domain("example.com")
        results = await fleet.provision_many(
            [f"w{i}@example.com" for i in range(GRANTS)], agent=Journal
        )
        grants = [r.grant.id for r in results if r.grant]
        workers = [start_worker(postgres_url, journal, f"worker-{n}") for n in range(3)]
        try:
            await wait_serving(workers)
            # Deliver in waves while the workers run, so that grants drain, are
            # released and are claimed again by whichever worker is quicker.
            for seq in range(PER_GRANT):
                for grant in grants:
                    await fleet.deliver(grant, f"Subject: {seq}\r\n\r\nbody\r\n".encode())
                if seq == PER_GRANT // 3:
                    await wait_until(lambda: journal_lines(journal) > 100, within=60)
                    victim = max(workers, key=lambda w: journal_lines(journal, [w]))
                    victim.process.send_signal(signal.SIGKILL)
                    killed_at = time.time_ns()
                await anyio.sleep(0.01)
            with anyio.fail_after(90):
                await fleet.wait_idle()
        finally:
            await stop_workers(workers)
        assert_stopped_cleanly(workers, victim)

    entries = read_journals(journal)
    assert {(e.agent, e.application) for e in entries} == {("Journal", "test")}
    runs = handler_runs(entries, victim.pid, killed_at)
    for grant in grants:
        assert_handled_in_order(grant, runs[grant], PER_GRANT)
    # the work was shared, and the killed worker's grants went on elsewhere
    assert len({e.pid for e in entries}) >= 2
    assert taken_over(runs.values(), victim.pid) > 0


# -- two applications, two classes -----------------------------------------------------------

DOMAINS = {"alpha": "alpha.example", "beta": "beta.example"}
# How many grants each (application, agent class) has.
SHARES: dict[tuple[str, type[Agent]], int] = {
    ("alpha", Journal): 6,
    ("alpha", OtherJournal): 4,
    ("beta", Journal): 4,
}
SCOPED_PER_GRANT = 15


@dataclass(frozen=True)
class Shard:
    """A grant's scope: the application and agent class whose processes may run it."""

    application: str
    agent: type[Agent]
    address: str


def mail(to: str, seq: int) -> bytes:
    return (
        f"From: someone@outside.example\r\nTo: {to}\r\nSubject: {seq}\r\n"
        f"Message-ID: <{seq}.{to}@outside.example>\r\n\r\nHello.\r\n"
    ).encode()


def replies(relay: RelayPeer) -> list[tuple[str, str]]:
    """(sender, subject) of every message the relay accepted."""
    parsed = [message_from_bytes(m.data) for m in relay.received]
    return [(m["From"], m["Subject"]) for m in parsed]


async def watch_leases(
    fleet: Fleet, shards: Mapping[str, Shard], workers: Iterable[WorkerProcess]
) -> None:
    """Fail as soon as the store shows a worker holding a grant outside its scope."""
    scope_of = {w.name: (w.application, w.agent) for w in workers}
    query = sa.select(leases_table.c.grant_id, leases_table.c.worker)
    while True:
        for grant, holder in await fleet.database.read(lambda conn: conn.execute(query).all()):
            shard = shards[grant]
            assert scope_of[holder] == (shard.application, shard.agent), (shard, holder)
        await anyio.sleep(0.05)


async def expire_outbound_leases(fleet: Fleet, owner: str) -> None:
    """End the leases of the outbound mail a killed worker had claimed, as time would.

    A sender's claim lasts 300 s (not the grant lease): the mail is sent again
    once it ends. Ending it now lets the test see that mail go out, too.
    """
    statement = (
        sa.update(outbound_table)
        .where(outbound_table.c.status == "pending", outbound_table.c.lease_owner == owner)
        .values(lease_until=0.0)
    )
    await fleet.database.write(lambda conn: conn.execute(statement))


async def test_two_applications_two_classes_one_worker_killed(
    database_url: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    async with relay_peer() as alpha_relay, relay_peer() as beta_relay, AsyncExitStack() as stack:
        relays = {"alpha": alpha_relay, "beta": beta_relay}
        # Fleets to provision and deliver with; they never serve, so they run no worker.
        fleets = {
            application: await stack.enter_async_context(
                Fleet(
                    database_url=database_url,
                    application=application,
                    agents=[Journal, OtherJournal],  # what wait_idle waits for
                )
            )
            for application in DOMAINS
        }
        shards: dict[str, Shard] = {}  # grant id -> its scope
        for application, domain in DOMAINS.items():
            await fleets[application].add_domain(domain)
        for (application, agent), count in SHARES.items():
            addresses = [
                f"{agent.__name__.lower()}{i}@{DOMAINS[application]}" for i in range(count)
            ]
            for result in await fleets[application].provision_many(addresses, agent=agent):
                assert result.grant is not None
                shards[result.grant.id] = Shard(application, agent, result.grant.address)
        # Each message is answered: (sender, subject) of the replies each relay must get.
        expected = {
            application: {
                (shard.address, f"Re: {seq}")
                for shard in shards.values()
                if shard.application == application
                for seq in range(SCOPED_PER_GRANT)
            }
            for application in DOMAINS
        }

        def worker(name: str, application: str, agent: type[Agent]) -> WorkerProcess:
            relay = {
                "MAILFLEET_RELAY_HOST": "127.0.0.1",
                "MAILFLEET_RELAY_PORT": str(relays[application].port),
                "MAILFLEET_RELAY_STARTTLS": "false",
            }
            return start_worker(
                database_url, journal, name, application=application, agent=agent, env=relay
            )

        siblings = [worker(f"alpha-journal-{n}", "alpha", Journal) for n in range(2)]
        workers = [
            *siblings,
            worker("alpha-other", "alpha", OtherJournal),
            worker("beta-journal", "beta", Journal),
        ]
        try:
            await wait_serving(workers)
            async with anyio.create_task_group() as tg:
                # No process may ever hold the lease of a grant outside its scope.
                tg.start_soon(watch_leases, fleets["alpha"], shards, workers)
                for seq in range(SCOPED_PER_GRANT):
                    for grant, shard in shards.items():
                        await fleets[shard.application].deliver(grant, mail(shard.address, seq))
                    if seq == SCOPED_PER_GRANT // 3:
                        # Kill whichever of the two alpha Journal workers has done more.
                        await wait_until(lambda: journal_lines(journal, siblings) > 30, within=60)
                        victim = max(siblings, key=lambda w: journal_lines(journal, [w]))
                        victim.process.send_signal(signal.SIGKILL)
                        killed_at = time.time_ns()
                    await anyio.sleep(0.02)
                with anyio.fail_after(90):
                    for fleet in fleets.values():
                        await fleet.wait_idle()
                await expire_outbound_leases(fleets["alpha"], victim.name)
                everything = set().union(*expected.values())
                await wait_until(  # at either relay: which one is checked below
                    lambda: everything <= {r for relay in relays.values() for r in replies(relay)},
                    within=30,
                )
                await anyio.sleep(0.3)  # a wrongly taken message would show up by now
                tg.cancel_scope.cancel()
        finally:
            await stop_workers(workers)
        assert_stopped_cleanly(workers, victim)

    # Each application's replies went out through its own relay, and only its own
    # (at least once: the killed worker may have sent some it could not record).
    for application, relay in relays.items():
        assert set(replies(relay)) == expected[application], application

    entries = read_journals(journal)
    scope_of = {w.pid: (w.application, w.agent) for w in workers}
    for entry in entries:
        shard = shards[entry.grant]
        # handled by its own class of its own application, in a process serving exactly that
        assert (entry.application, entry.agent) == (shard.application, shard.agent.__name__)
        assert scope_of[entry.pid] == (shard.application, shard.agent), entry
    runs = handler_runs(entries, victim.pid, killed_at)
    for grant in shards:
        assert_handled_in_order(grant, runs[grant], SCOPED_PER_GRANT)
    # the killed worker had work, and its sibling went on with its grants
    assert victim.pid in {e.pid for e in entries}
    assert taken_over(runs.values(), victim.pid) > 0
