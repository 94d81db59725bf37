"""``SpamFilter``: every signal of a message, gathered once, judged per workspace.

The MX asks it once per message for the signals (the pure ones of
``model/spam.py``: authentication and header anomalies; then every
:class:`~mailfleet.model.spam.SpamScorer`: the DNS blocklists, the plugins'
``mailfleet_spam_scorers``, any added with :meth:`SpamFilter.add`, all at
once), and per recipient for the verdict at that recipient's policy
threshold, with the signals only that recipient's rules add (``extra``: an
inbound rule's ``mark_spam``, :func:`~mailfleet.model.spam.rule_signal`).

A scorer that raises is logged and left out: a broken plugin never loses or
delays mail beyond its own time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import anyio

from ..model.policy import Policy
from ..model.spam import (
    SpamInput,
    SpamScorer,
    SpamSignal,
    SpamVerdict,
    authentication_signals,
    header_signals,
    judge,
)

__all__ = ["SpamFilter"]

log = logging.getLogger("mailfleet.spam")


class SpamFilter:
    """The built-in signals plus the scorers given (or added later)."""

    def __init__(self, scorers: Iterable[SpamScorer] = ()) -> None:
        self._scorers: list[SpamScorer] = list(scorers)

    def add(self, scorer: SpamScorer) -> None:
        """Consult ``scorer`` too, from the next message on."""
        self._scorers.append(scorer)

    @property
    def scorers(self) -> tuple[SpamScorer, ...]:
        """The scorers consulted besides the built-in signals, in order."""
        return tuple(self._scorers)

    async def signals(self, message: SpamInput) -> list[SpamSignal]:
        """Every signal of ``message``: authentication, header anomalies, then the
        scorers' (in the order the scorers were given)."""
        found = authentication_signals(message.authentication)
        if message.facts is not None:
            found.extend(header_signals(message.facts))
        if not self._scorers:
            return found
        results: list[list[SpamSignal]] = [[] for _ in self._scorers]

        async def run(index: int, scorer: SpamScorer) -> None:
            try:
                results[index] = list(await scorer.score(message))
            except Exception:
                log.exception(
                    "spam scorer %s failed; the message is scored without it",
                    getattr(scorer, "name", scorer),
                )

        if len(self._scorers) == 1:
            await run(0, self._scorers[0])
        else:
            async with anyio.create_task_group() as tg:
                for index, scorer in enumerate(self._scorers):
                    tg.start_soon(run, index, scorer)
        for signals in results:
            found.extend(signals)
        return found

    def verdict(
        self, signals: Sequence[SpamSignal], policy: Policy, extra: Sequence[SpamSignal] = ()
    ) -> SpamVerdict:
        """The verdict for a recipient whose workspace has ``policy``, with the signals
        only that recipient adds (``extra``: its rules' ``mark_spam``)."""
        return judge([*signals, *extra], policy.effective_spam_threshold)
