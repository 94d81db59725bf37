"""Agents for the worker-process tests: they journal every handler run to a file per process.

Each line is ``grant seq start|end|cancel class application time_ns pid``
(``cancel``: the worker interrupted the handler, having lost the lease): the agent
class that ran and the application its process serves (``MAILFLEET_APPLICATION``,
``-`` when unset). The tests read all journals back to check order,
exclusivity, scoping and that nothing was lost. A message with a sender is
answered, so that a test's relays can tell whose mail each process sends.
"""

from __future__ import annotations

import os
import time

import anyio

from mailfleet import Agent, InboundMessage


class Journal(Agent):
    """Takes a few milliseconds per message and writes down when it ran."""

    async def on_message(self, message: InboundMessage) -> None:
        seq = message.subject
        self._journal(f"{seq} start")
        try:
            await anyio.sleep(float(os.environ.get("MAILFLEET_TEST_HANDLER_SECONDS", "0.005")))
            if message.sender:
                await self.reply(message, text=f"{type(self).__name__} handled {seq}")
        except anyio.get_cancelled_exc_class():
            self._journal(f"{seq} cancel")
            raise
        self._journal(f"{seq} end")

    def _journal(self, event: str) -> None:
        application = os.environ.get("MAILFLEET_APPLICATION", "-")
        folder = os.environ["MAILFLEET_TEST_JOURNAL"]
        line = f"{self.grant.id} {event} {type(self).__name__} {application}"
        fd = os.open(f"{folder}/{os.getpid()}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, f"{line} {time.time_ns()} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


class OtherJournal(Journal):
    """The same work under another agent class: its grants are served separately."""
