"""Start-up of a ``mailfleet`` command: the wall time of one operator call.

A scratch SQLite database is set up once (a domain and ten grants, with the
command line itself), then ``mailfleet grants list`` (and ``--help``) runs as
a fresh ``python -m mailfleet`` process ``--rounds`` times each, byte code
cached as an installation has it. The figures are the best wall time (the
least disturbed by the rest of the machine), the median, and the best CPU
time (user + system, which a busy machine disturbs less). Target:
``cli_startup_s`` under 0.5 s.

Usage (from the repository root)::

    .venv/bin/python bench/cli_startup.py
    .venv/bin/python bench/cli_startup.py --rounds 10

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, median, scratch_database

_SRC = Path(__file__).resolve().parent.parent / "src"
TARGET_S = 0.5


def mailfleet(url: str, *args: str, cache: str) -> tuple[float, float]:
    """Run ``mailfleet --database-url URL ARGS...`` in a fresh process (byte code
    written under ``cache``): its wall time and its CPU time."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    path = [str(_SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    env.update(PYTHONPATH=os.pathsep.join(path), PYTHONPYCACHEPREFIX=cache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mailfleet", "--database-url", url, *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # in the error if it fails
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    with scratch_database("sqlite") as url, tempfile.TemporaryDirectory() as cache:
        mailfleet(url, "domains", "add", "example.com", cache=cache)
        addresses = [f"agent-{n}@example.com" for n in range(10)]
        mailfleet(url, "grants", "provision", *addresses, cache=cache)
        listing = [mailfleet(url, "grants", "list", cache=cache) for _ in range(rounds)]
        helping = [mailfleet(url, "--help", cache=cache) for _ in range(rounds)]
    figures: dict[str, float] = {}
    for name, runs in (("cli_startup", listing), ("cli_help", helping)):
        walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
        wall = f"wall best {min(walls):.3f}s (median {median(walls):.3f}s)"
        print(f"{name}: {wall}, cpu best {min(cpus):.3f}s")
        figures.update(
            {f"{name}_s": min(walls), f"{name}_median_s": median(walls), f"{name}_cpu_s": min(cpus)}
        )
    emit({**figures, "target_s": TARGET_S})


if __name__ == "__main__":
    main()
