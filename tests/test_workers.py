"""Three worker processes on one PostgreSQL database, one killed with SIGKILL mid-run.

Every message must be handled, each grant's messages in order, and never two
handlers of one grant at once, across processes.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from mailfleet import Fleet
from support import wait_until
from worker_app import Journal

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

TESTS = Path(__file__).resolve().parent
GRANTS = 24
PER_GRANT = 25


def start_worker(url: str, journal: Path, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MAILFLEET_TEST_JOURNAL": str(journal),
        "MAILFLEET_LEASE_TTL": "1.5",
        "MAILFLEET_POLL_INTERVAL": "0.05",
        "MAILFLEET_WORKER_ID": name,
        "MAILFLEET_SHUTDOWN_GRACE": "2",
    }
    command = ["--database-url", url, "--application", "test", "worker"]
    return subprocess.Popen(
        [sys.executable, "-m", "mailfleet", *command, str(TESTS / "worker_app.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def read_journals(folder: Path) -> list[tuple[str, int, str, int, int]]:
    records = []
    for path in folder.glob("*.log"):
        for line in path.read_text().splitlines():
            grant, seq, kind, at, pid = line.split()
            records.append((grant, int(seq), kind, int(at), int(pid)))
    return records


def journal_lines(folder: Path, pid: int | None = None) -> int:
    pattern = "*.log" if pid is None else f"{pid}.log"
    return sum(len(p.read_text().splitlines()) for p in folder.glob(pattern))


async def test_three_workers_one_killed(postgres_url: str, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    async with Fleet(database_url=postgres_url, application="test") as fleet:
        await fleet.add_domain("example.com")
        results = await fleet.provision_many(
            [f"w{i}@example.com" for i in range(GRANTS)], agent=Journal
        )
        grants = [r.grant.id for r in results if r.grant]
        workers = [start_worker(postgres_url, journal, f"worker-{n}") for n in range(3)]
        try:
            for worker in workers:  # each says so once its signal handlers are in place
                assert worker.stdout is not None
                line = await anyio.to_thread.run_sync(worker.stdout.readline)
                assert b"serving" in line, line
            # Deliver in waves while the workers run, so that grants drain, are
            # released and are claimed again by whichever worker is quicker.
            for seq in range(PER_GRANT):
                for grant in grants:
                    await fleet.deliver(grant, f"Subject: {seq}\r\n\r\nbody\r\n".encode())
                if seq == PER_GRANT // 3:
                    await wait_until(lambda: journal_lines(journal) > 100, within=60)
                    victim = max(workers, key=lambda w: len(list(journal.glob(f"{w.pid}.log"))))
                    victim.send_signal(signal.SIGKILL)
                    killed_at = time.time_ns()
                await anyio.sleep(0.01)
            with anyio.fail_after(90):
                await fleet.wait_idle()
        finally:
            survivors = [w for w in workers if w.poll() is None]
            for worker in survivors:
                worker.send_signal(signal.SIGTERM)
            outputs = [w.communicate(timeout=30) for w in workers]
        assert victim.returncode == -signal.SIGKILL
        for worker, (_, err) in zip(workers, outputs, strict=True):
            if worker is not victim:
                assert worker.returncode == 0, err.decode()
                assert b"Traceback" not in err, err.decode()

    records = read_journals(journal)
    # grant -> handler runs (start, end, seq, pid, finished)
    runs: dict[str, list[tuple[int, int, int, int, bool]]] = defaultdict(list)
    starts: dict[tuple[str, int, int], int] = {}
    for grant, seq, kind, at, pid in sorted(records, key=lambda r: r[3]):
        if kind == "start":
            starts[(grant, seq, pid)] = at
        else:
            runs[grant].append((starts.pop((grant, seq, pid)), at, seq, pid, True))
    for (grant, seq, pid), at in starts.items():
        assert pid == victim.pid, "only the killed worker may leave a handler unfinished"
        runs[grant].append((at, killed_at, seq, pid, False))

    taken_over = 0
    for grant in grants:
        handled = sorted(runs[grant])
        # nothing lost: every message ran to its end at least once
        assert {seq for _, _, seq, _, done in handled if done} == set(range(PER_GRANT))
        # never two handlers of one grant at once, across all processes
        for earlier, later in itertools.pairwise(handled):
            assert later[0] >= earlier[1], f"overlapping handlers for grant {grant}"
        # in order: the first completions of a grant's messages come in sequence
        first_done: dict[int, int] = {}
        for _, end, seq, _, done in handled:
            if done:
                first_done.setdefault(seq, end)
        assert sorted(first_done, key=first_done.__getitem__) == list(range(PER_GRANT))
        pids = [pid for _, _, _, pid, _ in handled]
        if victim.pid in pids and pids[-1] != victim.pid:
            taken_over += 1
    # the work was shared, and the killed worker's grants went on elsewhere
    assert len({pid for *_, pid in records}) >= 2
    assert taken_over > 0
