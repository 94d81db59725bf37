"""An agent for the multi-worker test: it journals every handler run to a file per process.

Each line is ``grant seq start|end time_ns pid``; the test reads all journals
back to check order, exclusivity and that nothing was lost.
"""

from __future__ import annotations

import os
import time

import anyio

from mailfleet import Agent, InboundMessage


def _journal(line: str) -> None:
    folder = os.environ["MAILFLEET_TEST_JOURNAL"]
    fd = os.open(f"{folder}/{os.getpid()}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line} {time.time_ns()} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


class Journal(Agent):
    """Takes a few milliseconds per message and writes down when it ran."""

    async def on_message(self, message: InboundMessage) -> None:
        seq = message.subject
        _journal(f"{self.grant.id} {seq} start")
        await anyio.sleep(0.005)
        _journal(f"{self.grant.id} {seq} end")
