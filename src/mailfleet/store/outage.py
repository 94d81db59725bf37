"""Living through a store outage: backoff with jitter, and two log lines per outage.

A loop that works on the store (the worker's claims and completions, the
sender, the webhook deliverer, the event feed, the WAL checkpointer, the MX)
cannot do its work while the database is away: down, restarting, or out of
space (SQLite ``database or disk is full``, PostgreSQL ``could not extend
file``). It keeps what it holds in memory, waits and tries again, and the
store's transactions make sure nothing was half written. :class:`Outage` is
how long it waits and what it logs:

- after the n-th failure in a row it waits ``base * 2**(n-1)`` seconds, at most
  ``cap``, of which a random part (up to half) is taken off, so that the loops
  of many processes do not retry in step;
- the first :class:`~mailfleet.StoreUnavailable` of an outage logs one WARNING
  with the store's one-line reason and no traceback (the cause is known);
  the next ones log at DEBUG;
- the first success after an outage logs one INFO line, with how long it lasted;
- any other exception is unexpected (a bug): it is logged at ERROR with its
  traceback every time, and backed off all the same, so that a loop that fails
  at once does not spin.

It lives in the store layer, beside the database it is about, so that the
store's own thread (:mod:`mailfleet.store.checkpoint`) and the runtime's loops
share it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import anyio

from ..model.errors import StoreUnavailable

__all__ = ["OUTAGE_BASE", "OUTAGE_CAP", "Outage"]

OUTAGE_BASE = 0.1
"""Seconds waited after the first failure of a row."""

OUTAGE_CAP = 10.0
"""The longest wait between two tries: a store back is used again within this long."""


class Outage:
    """The backoff and the log lines of one loop while its store fails.

    Call :meth:`failed` (or ``await`` :meth:`pause`) when a round failed and
    :meth:`succeeded` when one worked; ``what`` names the loop's work in the log
    lines ("committing completions", "sending"). Not thread-safe: one loop each.
    """

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        base: float = OUTAGE_BASE,
        cap: float = OUTAGE_CAP,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self._log = logger
        self._base = base
        self._cap = cap
        self._jitter = jitter
        self._clock = clock
        self._failures = 0
        self._since: float | None = None
        self.reason: str | None = None
        """The store's reason for the outage under way, or None."""

    @property
    def down(self) -> bool:
        """Whether the store has been unavailable since the last success."""
        return self._since is not None

    @property
    def failures(self) -> int:
        """Failed rounds in a row (0 after a success)."""
        return self._failures

    def delay(self) -> float:
        """The wait before the next try, after the failures so far."""
        if not self._failures:
            return 0.0
        full = min(self._cap, self._base * 2.0 ** min(self._failures - 1, 60))
        return full * (1.0 - self._jitter() / 2)

    def failed(self, exc: BaseException, *, expected: bool | None = None) -> float:
        """Record a failed round and log it; return the seconds to wait.

        ``expected`` (default: whether ``exc`` is a
        :class:`~mailfleet.StoreUnavailable`) says whether the failure is the
        store's being away, logged once per outage, or a bug, logged each time.
        """
        self._failures += 1
        wait = self.delay()
        if expected is None:
            expected = isinstance(exc, StoreUnavailable)
        if not expected:
            self._log.error("%s failed; trying again in %.2gs", self.what, wait, exc_info=exc)
            return wait
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self._since is None:
            self._since = self._clock()
            self.reason = reason
            self._log.warning(
                "%s: the store is unavailable (%s); retrying with backoff, up to %gs apart",
                self.what,
                reason,
                self._cap,
                extra={"outage": self.what, "reason": reason},
            )
        else:
            self._log.debug(
                "%s: the store is still unavailable (%s); retrying in %.2gs",
                self.what,
                reason,
                wait,
            )
        return wait

    async def pause(self, exc: BaseException, *, expected: bool | None = None) -> None:
        """:meth:`failed`, then sleep for the wait it gives."""
        await anyio.sleep(self.failed(exc, expected=expected))

    def succeeded(self) -> None:
        """Record a round that worked; the first after an outage logs its end."""
        self._failures = 0
        if self._since is None:
            return
        lasted = self._clock() - self._since
        self._since = None
        self.reason = None
        self._log.info(
            "%s: the store works again, after %.1fs unavailable",
            self.what,
            lasted,
            extra={"outage": self.what, "outage_seconds": round(lasted, 3)},
        )
