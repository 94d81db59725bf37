"""How far a log whose serial ids may become visible out of order can be read safely.

The event outbox numbers its rows with a database sequence. On PostgreSQL a
transaction takes its id when it inserts and becomes visible when it
commits, so a later id can be seen before an earlier one (the earlier
transaction is still running), and an id taken by a transaction that rolled
back never appears at all. A reader that moved past the earlier id would
never see that event.

:class:`Frontier` is the position below which nothing new can appear: it
moves over ids as they become visible, and stops at a missing id until that
id shows up or has been missing for ``settle`` seconds (then it is taken for
a rollback and passed). An event whose transaction commits more than
``settle`` seconds after a later one became visible is passed over too;
``settle`` bounds both the wait and that risk. On SQLite writers commit in
id order and a rolled-back id is reused, so ids never go missing there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["Frontier"]


@dataclass(slots=True)
class _Missing:
    """Ids ``first``..``last`` seen missing since ``since``."""

    first: int
    last: int
    since: float


class Frontier:
    """The settled position of a serial log: every id at or below it is visible or given up.

    Pure: the caller reads the visible ids above :attr:`position` and the time,
    and calls :meth:`advance`.
    """

    __slots__ = ("_missing", "position", "settle")

    def __init__(self, position: int = 0, *, settle: float = 2.0) -> None:
        if settle < 0:
            raise ValueError("settle must be >= 0")
        self.position = position
        self.settle = settle
        self._missing: list[_Missing] = []

    @property
    def waiting_since(self) -> float | None:
        """Since when the frontier has waited for the missing id just above it (None: it
        is not waiting)."""
        if self._missing and self._missing[0].first == self.position + 1:
            return self._missing[0].since
        return None

    def advance(self, visible: Iterable[int], now: float) -> int:
        """Move over ``visible`` (ids above :attr:`position` visible now, ascending; they
        may stop short of the newest) and return the new position.

        Ids missing between visible ones are remembered with the time they were
        first seen missing; the frontier passes such a gap only once it is
        ``settle`` seconds old.
        """
        ids = [i for i in visible if i > self.position]
        if not ids:
            return self.position
        self._remember_gaps(ids, now)
        position = self.position
        gaps = self._missing
        gap_index = 0
        for i in ids:
            while i > position + 1:
                gap = gaps[gap_index]  # the gap just above position: remembered above
                if now - gap.since < self.settle:
                    return self._stop(position, gap_index)
                position = gap.last
                gap_index += 1
            position = i
        return self._stop(position, gap_index)

    def _stop(self, position: int, passed: int) -> int:
        self.position = position
        del self._missing[:passed]
        return position

    def _remember_gaps(self, ids: list[int], now: float) -> None:
        """Merge the gaps between ``ids`` (and below the first) into the remembered ones,
        keeping the first time each id was seen missing."""
        found: list[tuple[int, int]] = []
        previous = self.position
        for i in ids:
            if i > previous + 1:
                found.append((previous + 1, i - 1))
            previous = i
        merged: list[_Missing] = []
        old = [m for m in self._missing if m.last > self.position]
        for first, last in found:
            cursor = first
            for known in old:
                if known.last < cursor or known.first > last:
                    continue
                if known.first > cursor:  # new ids before this remembered gap
                    merged.append(_Missing(cursor, known.first - 1, now))
                start, end = max(cursor, known.first), min(last, known.last)
                merged.append(_Missing(start, end, known.since))
                cursor = end + 1
                if cursor > last:
                    break
            if cursor <= last:
                merged.append(_Missing(cursor, last, now))
        self._missing = merged
