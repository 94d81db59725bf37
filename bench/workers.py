"""Scale-out: 1, 2 and 4 ``mailfleet worker`` processes on one PostgreSQL database.

The load: 1,000 grants of one application, bound to ``bench/workers_agent.py``'s
``ScaleAgent``; 20,000 messages, 20 per grant, numbered 0..19 in each grant.
Each round pre-loads the messages from the benchmark's own process (a front
end's ``Fleet``, ``run_worker=False``, 100 producer tasks ``await
fleet.deliver(...)``) behind a *gate*: a lease on every grant held by a
worker name no process has. Then it starts N worker processes (the real
command, ``mailfleet worker bench/workers_agent.py:ScaleAgent``, each through
a small wrapper that counts the statements it sends, see below), waits until
every one says it serves, and deletes the gate's leases in one commit: the
drain is timed from that commit to the last handler's end. Pre-loaded, so
that the producer (whose deliveries compete for the same two cores) is not
what is measured; gated, so that the clock starts alike for every N. Then
4,000 more messages are streamed at 400/s to the same workers (the *paced*
phase), for the latency from commit to handler start below saturation. The
workers poll every 0.05 s (``MAILFLEET_POLL_INTERVAL``; the default 1 s would
add up to a second to a round of a few seconds).

Figures, per worker count (the median of ``--rounds`` rounds, taken in
alternated order 1, 2, 4, 4, 2, 1, ...; between rounds the messages and
events are deleted and the tables vacuumed, so every round starts alike):

- ``msgs_per_s``: 20,000 / (last handler end - the gate's opening commit);
- ``p50_ms`` / ``p99_ms``, of the paced phase: commit (the time ``deliver``
  returned to its producer task; an upper bound of the commit, so a handler
  may start a hair before it: such a latency counts as 0) to handler start
  (``time.time()`` as the handler starts);
- ``statements_per_message`` and ``transactions_per_message``: what the N
  worker processes sent PostgreSQL during the drain (from the gate's opening
  until every completion was committed), over 20,000 (the paced phase's are
  printed too).
  ``pg_stat_statements`` is not loaded on this server (it needs
  ``shared_preload_libraries``, hence a restart), and a SQLAlchemy
  ``before_cursor_execute`` hook would miss the hot-path statements that run
  on the driver's cursor (``store/prepared.py``), so each worker runs
  through ``python bench/workers.py --count-statements ...``, which wraps
  psycopg's ``Cursor.execute`` / ``executemany`` (an ``executemany`` counts
  one statement per row: PostgreSQL runs each) and ``Connection.commit`` /
  ``rollback`` (those that end an open transaction), then runs the
  ``mailfleet`` command; it writes its counts every 0.05 s. They include what
  else a worker process polls for (the sender, webhooks, retention);
- ``lock_wait_share``: sampled every 20 ms from ``pg_stat_activity``, the
  share of the database's active backends waiting on a heavyweight lock
  (``wait_event_type = 'Lock'``), a direct reading of lock thrash;
- checked in the same run, from the journals: ``order_violations`` (a grant's
  message whose first run started before that of a lower number),
  ``overlaps`` (two runs of one grant at once, across processes),
  ``duplicates`` (a message run more than once), ``lost`` (never run); all
  must be 0 (summed over every round).

Target: on this 2-core machine adding workers must not lower throughput by
more than 10 % (``scaling_2_ratio`` and ``scaling_4_ratio`` >= 0.9). The load
average is printed with each round; the machine is shared.

Usage (from the repository root)::

    .venv/bin/python bench/workers.py              # 3 rounds of each worker count
    .venv/bin/python bench/workers.py --rounds 1 --messages 4000

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.to_thread
import psycopg
from _common import emit, median, percentile, scratch_database

BENCH = Path(__file__).resolve().parent
WORKER_COUNTS = (1, 2, 4)
PRODUCERS = 100
POLL_INTERVAL = "0.05"
APPLICATION = "bench"


# -- the worker wrapper: count what a worker process sends PostgreSQL ----------------------


def count_statements(counts: Path, argv: list[str]) -> None:
    """Run the ``mailfleet`` command ``argv`` with psycopg's calls counted; the counts
    (``calls statements transactions``) are rewritten to ``counts`` every 0.05 s and
    at exit."""
    import atexit

    from psycopg import pq

    tally = [0, 0, 0]  # driver calls, statements PostgreSQL runs, transactions ended
    lock = threading.Lock()
    execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
    commit, rollback = psycopg.Connection.commit, psycopg.Connection.rollback
    idle = pq.TransactionStatus.IDLE

    def counted_execute(self: Any, query: Any, params: Any = None, **kwargs: Any) -> Any:
        with lock:
            tally[0] += 1
            tally[1] += 1
        return execute(self, query, params, **kwargs)

    def counted_executemany(self: Any, query: Any, params_seq: Any, **kwargs: Any) -> Any:
        rows = list(params_seq)
        with lock:
            tally[0] += 1
            tally[1] += len(rows)
        return executemany(self, query, rows, **kwargs)

    def ending(original: Any) -> Any:
        def end(self: Any) -> Any:
            if self.info.transaction_status != idle:  # else psycopg sends nothing
                with lock:
                    tally[2] += 1
            return original(self)

        return end

    psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
    psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
    psycopg.Connection.commit = ending(commit)  # type: ignore[method-assign]
    psycopg.Connection.rollback = ending(rollback)  # type: ignore[method-assign]

    def dump() -> None:
        # Under the lock: the dumping thread and the exit's dump share the file.
        with lock:
            partial = counts.with_suffix(".tmp")
            partial.write_text(" ".join(map(str, tally)) + "\n")
            partial.replace(counts)

    def dumper() -> None:
        while True:
            dump()
            time.sleep(0.05)

    threading.Thread(target=dumper, daemon=True).start()
    atexit.register(dump)
    sys.argv = ["mailfleet", *argv]
    if source := os.environ.get("WORKERS_SRC"):  # the baseline's tree (--baseline-src)
        sys.path.insert(0, source)
    from mailfleet.__main__ import main

    main()


# -- worker processes -------------------------------------------------------------------


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    counts: Path
    stderr: Path

    def cpu(self) -> float:
        """CPU seconds the process used so far (user and system)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tally(self) -> tuple[int, int, int]:
        try:
            calls, statements, transactions = self.counts.read_text().split()
        except (FileNotFoundError, ValueError):
            return 0, 0, 0
        return int(calls), int(statements), int(transactions)


def start_worker(
    url: str, folder: Path, name: str, journal: Path, source: str | None
) -> WorkerProcess:
    environment = {
        **os.environ,
        **({"WORKERS_SRC": source} if source else {}),
        "MAILFLEET_APPLICATION": APPLICATION,
        "MAILFLEET_POLL_INTERVAL": POLL_INTERVAL,
        "MAILFLEET_WORKER_ID": name,
        "MAILFLEET_PLUGINS": "",
        "WORKERS_JOURNAL": str(journal),
    }
    counts = folder / f"{name}.counts"
    stderr = folder / f"{name}.stderr"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--count-statements",
        str(counts),
        "--database-url",
        url,
        "worker",
        f"{BENCH / 'workers_agent.py'}:ScaleAgent",
    ]
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            command, cwd=folder, env=environment, stdout=subprocess.PIPE, stderr=err
        )
    return WorkerProcess(process, counts, stderr)


def wait_serving(worker: WorkerProcess) -> None:
    assert worker.process.stdout is not None
    line = worker.process.stdout.readline()
    if b"serving" not in line:
        raise RuntimeError(f"a worker did not start: {line!r} {worker.stderr.read_text()}")


def stop(workers: Sequence[WorkerProcess]) -> None:
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.communicate()
        errors = worker.stderr.read_text(errors="replace")
        if worker.process.returncode != 0 or "Traceback" in errors:
            raise RuntimeError(f"a worker failed ({worker.process.returncode}): {errors}")


# -- pg_stat_activity sampling -----------------------------------------------------------


_ACTIVITY = """
SELECT a.wait_event_type, a.wait_event, a.query,
       (SELECT b.query FROM pg_stat_activity b WHERE b.pid = (pg_blocking_pids(a.pid))[1])
FROM pg_stat_activity a
WHERE a.datname = %s AND a.state = 'active' AND a.pid <> pg_backend_pid()
"""


def _words(query: str | None) -> str:
    """The first words of a statement, to tell the statements apart."""
    return " ".join((query or "?").split()[:8])[:90]


class Sampler:
    """Samples the wait events of the database's backends every 20 ms, in a thread."""

    def __init__(self, dsn: str, database: str) -> None:
        self._dsn, self._database = dsn, database
        self.active = 0
        self.waits: dict[str, int] = defaultdict(int)
        self.blocked: dict[str, int] = defaultdict(int)
        """Lock waits by the waiting statement and the one holding it (their first words)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute(_ACTIVITY, (self._database,)).fetchall()
                for kind, event, waiting, holding in rows:
                    self.active += 1
                    if kind is not None:
                        self.waits[f"{kind}:{event}"] += 1
                    if kind == "Lock":
                        self.blocked[f"{_words(waiting)} <- {_words(holding)}"] += 1

    @property
    def lock_share(self) -> float:
        locks = sum(n for name, n in self.waits.items() if name.startswith("Lock:"))
        return locks / self.active if self.active else 0.0


# -- journals ------------------------------------------------------------------------------


class Run(NamedTuple):
    start: float
    end: float
    seq: int
    pid: int


def read_journals(folder: Path) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = defaultdict(list)
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            grant, seq, pid, start, end = line.split()
            runs[grant].append(Run(float(start), float(end), int(seq), int(pid)))
    for grant_runs in runs.values():
        grant_runs.sort()
    return runs


def journal_lines(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.log"):
        with path.open("rb") as journal:
            total += sum(1 for _ in journal)
    return total


@dataclass
class Checks:
    order_violations: int = 0
    overlaps: int = 0
    duplicates: int = 0
    lost: int = 0

    def add(self, other: Checks) -> None:
        self.order_violations += other.order_violations
        self.overlaps += other.overlaps
        self.duplicates += other.duplicates
        self.lost += other.lost


def check(runs: dict[str, list[Run]], grants: Sequence[str], per_grant: int) -> Checks:
    found = Checks()
    for grant in grants:
        grant_runs = runs.get(grant, [])
        seqs = [run.seq for run in grant_runs]
        distinct = set(seqs)
        found.duplicates += len(seqs) - len(distinct)
        found.lost += len(set(range(per_grant)) - distinct)
        first: list[int] = []
        seen: set[int] = set()
        for seq in seqs:  # in start order
            if seq not in seen:
                seen.add(seq)
                first.append(seq)
        found.order_violations += sum(1 for a, b in itertools.pairwise(first) if b < a)
        found.overlaps += sum(1 for a, b in itertools.pairwise(grant_runs) if b.start < a.end)
    return found


# -- one round ------------------------------------------------------------------------------


@dataclass
class Round:
    workers: int
    msgs_per_s: float
    preload_msgs_per_s: float
    p50_ms: float
    p99_ms: float
    paced_msgs_per_s: float
    statements_per_message: float
    calls_per_message: float
    transactions_per_message: float
    cpu_ms_per_message: float
    pg_cpu_ms_per_message: float
    paced_pg_cpu_ms_per_message: float
    paced_statements_per_message: float
    paced_transactions_per_message: float
    paced_cpu_ms_per_message: float
    variant: str
    lock_wait_share: float
    load: float
    checks: Checks
    waits: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)
    per_process: list[int] = field(default_factory=list)


async def produce(
    fleet: Any, grants: Sequence[str], first: int, per_grant: int, rate: float | None = None
) -> dict[tuple[str, int], float]:
    """Deliver messages ``first`` .. ``first + per_grant - 1`` to each grant from
    PRODUCERS tasks, each owning some grants and delivering theirs in number order,
    as fast as they are taken or at ``rate`` messages/s overall; the time each
    ``deliver`` returned."""
    committed: dict[tuple[str, int], float] = {}
    start = time.monotonic()

    async def producer(n: int, mine: Sequence[str]) -> None:
        for k, seq in enumerate(range(first, first + per_grant)):
            raw = f"Subject: {seq}\r\nFrom: someone@example.net\r\n\r\nbody\r\n".encode()
            for i, grant in enumerate(mine):
                if rate is not None:  # this task's share of the schedule
                    due = start + ((k * len(mine) + i) * PRODUCERS + n) / rate
                    if (wait := due - time.monotonic()) > 0:
                        await anyio.sleep(wait)
                await fleet.deliver(grant, raw)
                committed[grant, seq] = time.time()

    async with anyio.create_task_group() as tasks:
        for n in range(PRODUCERS):
            tasks.start_soon(producer, n, grants[n::PRODUCERS])
    return committed


def ready_entries(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM queue_entries").fetchone()
    return int(row[0]) if row else 0


GATE = "bench-gate"
"""The worker name of the leases that hold the pre-loaded grants until the clock starts."""


def close_gate(dsn: str, grants: Sequence[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO grant_leases (grant_id, worker, expires_at) VALUES (%s, %s, %s)",
            [(grant, GATE, time.time() + 86_400) for grant in grants],
        )


def open_gate(dsn: str) -> float:
    """Give the pre-loaded grants to the workers; the time the release committed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM grant_leases WHERE worker = %s", (GATE,))
        return time.time()


def backend_cpu(dsn: str, database: str) -> float:
    """CPU seconds used so far by the server processes of ``database``'s sessions (the
    server is local), this one's excepted."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        pids = [
            pid
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        ]
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postgres_ceiling(url: str, seconds: int = 5) -> dict[str, float]:
    """What this PostgreSQL server sustains on this machine, by pgbench (8 clients, 2
    threads, ``seconds`` each): one-statement reads (``SELECT 1``, each its own
    transaction) per second, and committed one-row write transactions per second
    (``INSERT`` + ``COMMIT``, with the server's fsync). Empty without pgbench."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_ceiling (id bigserial PRIMARY KEY, v int)")
    figures = {}
    with tempfile.TemporaryDirectory(prefix="mailfleet-pgbench-") as folder:
        for name, script in (
            ("pg_select_per_s", "SELECT 1;\n"),
            ("pg_write_commits_per_s", "INSERT INTO bench_ceiling (v) VALUES (1);\n"),
        ):
            path = Path(folder) / f"{name}.sql"
            path.write_text(script)
            done = subprocess.run(
                [pgbench, "-n", "-c", "8", "-j", "2", "-T", str(seconds), "-f", str(path), url],
                capture_output=True,
                text=True,
                check=True,
            )
            found = re.search(r"tps = ([0-9.]+)", done.stdout)
            if found:
                figures[name] = float(found.group(1))
    return figures


def reset(dsn: str) -> None:
    """Start the next round alike: no messages, no events, vacuumed tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("queue_entries", "messages", "events"):
            conn.execute(f"DELETE FROM {table}")
        for table in ("queue_entries", "messages", "events", "grant_leases", "grants"):
            conn.execute(f"VACUUM ANALYZE {table}")


async def wait_handled(journal: Path, total: int, dsn: str) -> None:
    """Until the journals hold ``total`` runs and every completion is committed."""
    with anyio.fail_after(600):
        while True:
            if journal_lines(journal) >= total and not ready_entries(dsn):
                return
            await anyio.sleep(0.02)


async def one_round(
    url: str,
    database: str,
    folder: Path,
    fleet: Any,
    grants: Sequence[str],
    load: tuple[int, int, float],
    count: int,
    number: int,
    source: str | None = None,
) -> Round:
    """Pre-load behind the gate, start ``count`` workers, open the gate and time the
    drain; then stream the paced load to the same workers and time commit to start."""
    per_grant, paced_per_grant, rate = load
    dsn = url
    here = folder / f"round-{number}-{count}{'-base' if source else ''}"
    journal = here / "journal"
    journal.mkdir(parents=True)
    total = len(grants) * per_grant
    await anyio.to_thread.run_sync(close_gate, dsn, grants)
    started = time.time()
    await produce(fleet, grants, 0, per_grant)
    preloaded = time.time() - started
    workers = [start_worker(url, here, f"bench-w{n}", journal, source) for n in range(count)]
    try:
        for worker in workers:
            await anyio.to_thread.run_sync(wait_serving, worker)
        await anyio.sleep(0.3)  # let the idle polls settle
        before = [worker.tally() for worker in workers]
        cpu_before = sum(worker.cpu() for worker in workers)
        pg_before = await anyio.to_thread.run_sync(backend_cpu, dsn, database)
        with Sampler(dsn, database) as sampler:
            opened = await anyio.to_thread.run_sync(open_gate, dsn)
            await wait_handled(journal, total, dsn)
        after = [worker.tally() for worker in workers]
        cpu_after = sum(worker.cpu() for worker in workers)
        pg_after = await anyio.to_thread.run_sync(backend_cpu, dsn, database)
        drained = read_journals(journal)
        last_end = max(run.end for grant_runs in drained.values() for run in grant_runs)
        # The paced stream, to the same workers: latency below saturation.
        started = time.time()
        committed = await produce(fleet, grants, per_grant, paced_per_grant, rate)
        paced = time.time() - started
        await wait_handled(journal, total + len(grants) * paced_per_grant, dsn)
        paced_after = [worker.tally() for worker in workers]
        paced_cpu = sum(worker.cpu() for worker in workers) - cpu_after
        paced_pg = await anyio.to_thread.run_sync(backend_cpu, dsn, database) - pg_after
    finally:
        await anyio.to_thread.run_sync(stop, workers)
    runs = read_journals(journal)
    latencies = [
        max(0.0, run.start - committed[grant, run.seq]) * 1000
        for grant, grant_runs in runs.items()
        for run in grant_runs
        if (grant, run.seq) in committed
    ]
    calls, statements, transactions = _sent(before, after)
    _, paced_statements, paced_transactions = _sent(after, paced_after)
    paced_total = len(grants) * paced_per_grant
    handled: dict[int, int] = defaultdict(int)
    for grant_runs in drained.values():
        for run in grant_runs:
            handled[run.pid] += 1
    return Round(
        workers=count,
        msgs_per_s=total / (last_end - opened),
        preload_msgs_per_s=total / preloaded,
        p50_ms=percentile(latencies, 0.5),
        p99_ms=percentile(latencies, 0.99),
        paced_msgs_per_s=len(grants) * paced_per_grant / paced,
        statements_per_message=statements / total,
        calls_per_message=calls / total,
        transactions_per_message=transactions / total,
        cpu_ms_per_message=(cpu_after - cpu_before) * 1000 / total,
        pg_cpu_ms_per_message=(pg_after - pg_before) * 1000 / total,
        paced_pg_cpu_ms_per_message=paced_pg * 1000 / paced_total,
        paced_statements_per_message=paced_statements / paced_total,
        paced_transactions_per_message=paced_transactions / paced_total,
        paced_cpu_ms_per_message=paced_cpu * 1000 / paced_total,
        variant="base" if source else "",
        lock_wait_share=sampler.lock_share,
        load=os.getloadavg()[0],
        checks=check(runs, grants, per_grant + paced_per_grant),
        waits=dict(sampler.waits),
        blocked=dict(sampler.blocked),
        per_process=sorted(handled.values(), reverse=True),
    )


def _sent(
    before: Sequence[tuple[int, int, int]], after: Sequence[tuple[int, int, int]]
) -> tuple[int, int, int]:
    """What the worker processes sent between two tallies: calls, statements, transactions."""
    calls, statements, transactions = (
        sum(a[i] - b[i] for a, b in zip(after, before, strict=True)) for i in range(3)
    )
    return calls, statements, transactions


# -- main -------------------------------------------------------------------------------


async def bench(
    rounds: int, grant_count: int, load: tuple[int, int, float], baseline: str | None
) -> dict[str, Any]:
    from workers_agent import ScaleAgent

    from mailfleet import Fleet

    per_grant, paced_per_grant, _ = load
    variants: list[str | None] = [None, baseline] if baseline else [None]
    results: list[Round] = []
    with (
        scratch_database("postgres") as url,
        tempfile.TemporaryDirectory(prefix="mailfleet-workers-") as scratch,
    ):
        folder = Path(scratch)
        database = url.rsplit("/", 1)[1]
        async with Fleet(
            database_url=url,
            application=APPLICATION,
            agents=[ScaleAgent],
            run_worker=False,
            plugins="",
        ) as fleet:
            await fleet.add_domain("example.com")
            provisioned = await fleet.provision_many(
                [f"scale-{n}@example.com" for n in range(grant_count)], agent=ScaleAgent
            )
            grants = [r.grant.id for r in provisioned if r.grant]
            await anyio.to_thread.run_sync(reset, url)  # the first round too, analyzed
            number = 0
            for r in range(rounds):
                order = WORKER_COUNTS if r % 2 == 0 else tuple(reversed(WORKER_COUNTS))
                for count in order:
                    for source in variants if r % 2 == 0 else reversed(variants):
                        number += 1
                        result = await one_round(
                            url, database, folder, fleet, grants, load, count, number, source
                        )
                        results.append(result)
                        report(number, result)
                        await anyio.to_thread.run_sync(reset, url)
        ceiling = await anyio.to_thread.run_sync(postgres_ceiling, url)
    figures: dict[str, Any] = {}
    checks = Checks()
    for result in results:
        checks.add(result.checks)
    for variant in ("", "base_") if baseline else ("",):
        for count in WORKER_COUNTS:
            mine = [r for r in results if r.workers == count and r.variant == variant[:-1]]
            prefix = f"{variant}workers_{count}"
            for name in (
                "msgs_per_s",
                "p50_ms",
                "p99_ms",
                "statements_per_message",
                "transactions_per_message",
                "cpu_ms_per_message",
                "pg_cpu_ms_per_message",
                "paced_pg_cpu_ms_per_message",
                "paced_statements_per_message",
                "paced_transactions_per_message",
                "paced_cpu_ms_per_message",
                "lock_wait_share",
            ):
                figures[f"{prefix}_{name}"] = median([getattr(r, name) for r in mine])
        one = figures[f"{variant}workers_1_msgs_per_s"]
        for count in WORKER_COUNTS[1:]:
            figures[f"{variant}scaling_{count}_ratio"] = (
                figures[f"{variant}workers_{count}_msgs_per_s"] / one
            )
    if baseline:
        for count in WORKER_COUNTS:
            figures[f"workers_{count}_vs_base_ratio"] = (
                figures[f"workers_{count}_msgs_per_s"] / figures[f"base_workers_{count}_msgs_per_s"]
            )
    figures.update(ceiling)
    figures.update(
        order_violations=checks.order_violations,
        overlaps=checks.overlaps,
        duplicates=checks.duplicates,
        lost=checks.lost,
        grants=grant_count,
        messages=grant_count * per_grant,
        paced_messages=grant_count * paced_per_grant,
        paced_rate=load[2],
        preload_msgs_per_s=median([r.preload_msgs_per_s for r in results]),
        rounds=rounds,
        load_average=os.getloadavg()[0],
    )
    return figures


def report(number: int, result: Round) -> None:
    waits = ", ".join(
        f"{name} {n}" for name, n in sorted(result.waits.items(), key=lambda kv: -kv[1])[:4]
    )
    print(
        f"round {number}: {result.workers} worker(s){' (baseline)' if result.variant else ''}: "
        f"drain {result.msgs_per_s:,.0f} msgs/s "
        f"(pre-load {result.preload_msgs_per_s:,.0f}/s; handled per process "
        f"{result.per_process}), {result.statements_per_message:.3f} statements "
        f"({result.calls_per_message:.3f} calls, {result.transactions_per_message:.3f} "
        f"transactions, {result.cpu_ms_per_message:.3f} ms of CPU, PostgreSQL "
        f"{result.pg_cpu_ms_per_message:.3f} ms) per message; "
        f"lock waits {result.lock_wait_share:.1%} of active "
        f"backends (wait events: {waits or 'none'}); paced at {result.paced_msgs_per_s:,.0f}/s "
        f"commit to handler p50 {result.p50_ms:,.1f} ms p99 {result.p99_ms:,.1f} ms, "
        f"{result.paced_statements_per_message:.2f} statements "
        f"({result.paced_transactions_per_message:.2f} transactions, "
        f"{result.paced_cpu_ms_per_message:.2f} ms of CPU, PostgreSQL "
        f"{result.paced_pg_cpu_ms_per_message:.2f} ms) per message; "
        f"load {result.load:.2f}",
        flush=True,
    )
    for pair, n in sorted(result.blocked.items(), key=lambda kv: -kv[1])[:3]:
        print(f"    lock wait x{n}: {pair}", flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--count-statements":
        count_statements(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each worker count")
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20_000, help="pre-loaded, over the grants")
    parser.add_argument("--paced", type=int, default=4000, help="streamed after, over the grants")
    parser.add_argument("--rate", type=float, default=400.0, help="the paced stream, msgs/s")
    parser.add_argument(
        "--baseline-src",
        help="also run every round with workers importing mailfleet from this src/ folder",
    )
    args = parser.parse_args()
    load = (max(1, args.messages // args.grants), max(1, args.paced // args.grants), args.rate)
    figures = anyio.run(bench, args.rounds, args.grants, load, args.baseline_src)
    print(
        f"throughput: 1 worker {figures['workers_1_msgs_per_s']:,.0f} msgs/s, "
        f"2: {figures['workers_2_msgs_per_s']:,.0f} ({figures['scaling_2_ratio']:.2f}), "
        f"4: {figures['workers_4_msgs_per_s']:,.0f} ({figures['scaling_4_ratio']:.2f}); "
        f"target >= 0.9. order violations {figures['order_violations']}, overlaps "
        f"{figures['overlaps']}, duplicates {figures['duplicates']}, lost {figures['lost']}",
        flush=True,
    )
    emit(figures)


if __name__ == "__main__":
    main()
