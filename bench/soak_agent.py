"""The agent ``bench/soak.py`` runs with ``mailfleet run``: it answers every message.

Each handled message is journaled first, one line ``N TIME`` (the soak's
number of the message, from its subject ``soak N``, and ``time.time()`` as
the handler starts) in the file ``SOAK_JOURNAL`` names; the soak reads it to
time accept-to-handler and reply-to-relay, and to tell a message handled
twice. Then the handler replies to the sender. The file is not a module of
the benchmarks to run on its own (``python bench/soak_agent.py`` does
nothing).
"""

from __future__ import annotations

import os
import time
from typing import IO

from mailfleet import Agent, InboundMessage

GRANTS = 8
"""How many addresses the soak's fleet serves, ``desk-0@`` ... ``desk-7@example.com``."""

_journal: IO[str] | None = None


def _journal_file() -> IO[str]:
    global _journal
    if _journal is None:
        _journal = open(os.environ["SOAK_JOURNAL"], "a", buffering=1)
    return _journal


class SoakDesk(Agent):
    """Replies to each message, in its thread; journals when each handler started."""

    addresses = tuple(f"desk-{n}@example.com" for n in range(GRANTS))

    async def on_message(self, message: InboundMessage) -> None:
        started = time.time()
        number = (message.subject or "").rpartition(" ")[2]
        _journal_file().write(f"{number} {started:.6f}\n")
        result = await self.reply(message, text=f"Thanks for message {number}.\n")
        if not result.ok:
            raise RuntimeError(f"the reply to message {number} was refused: {result}")
