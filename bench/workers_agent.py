"""The agent ``bench/workers.py`` runs in each ``mailfleet worker`` process.

Each handler run is journaled, one line ``GRANT SEQ PID START END`` (the
message's number within its grant, from its subject, and ``time.time()`` as
the handler starts and as it ends) in a file of its own process,
``$WORKERS_JOURNAL/<pid>.log``; the benchmark reads every journal back to
check order, exclusivity, duplicates and losses, and to time commit-to-start.
The handler awaits ``WORKERS_HANDLER_SECONDS`` (default 1 ms), a stand-in for
an agent waiting on I/O, so that two runs of one grant at once would overlap
in the journals. The file is not a benchmark to run on its own
(``python bench/workers_agent.py`` does nothing).
"""

from __future__ import annotations

import os
import time
from typing import IO

import anyio

from mailfleet import Agent, InboundMessage

_journal: IO[str] | None = None


def _journal_file() -> IO[str]:
    global _journal
    if _journal is None:
        folder = os.environ["WORKERS_JOURNAL"]
        _journal = open(f"{folder}/{os.getpid()}.log", "a", buffering=1)
    return _journal


class ScaleAgent(Agent):
    """Journals each message's handler run: grant, number, process, start and end."""

    async def on_message(self, message: InboundMessage) -> None:
        started = time.time()
        await anyio.sleep(float(os.environ.get("WORKERS_HANDLER_SECONDS", "0.001")))
        ended = time.time()
        _journal_file().write(
            f"{self.grant.id} {message.subject} {os.getpid()} {started:.6f} {ended:.6f}\n"
        )
