"""Reputation: bounce and complaint rates over a rolling window of the most recent sends.

A mail provider judges a sender by its recent volume, not by the calendar:
the rate that matters is hard bounces (and complaints) among the last N
messages sent, whatever the time they took. A :class:`RollingWindow` keeps
exactly that for one subject (a grant, a workspace, a domain, the
application), in O(1) work and memory per event:

- each send is numbered (:meth:`RollingWindow.send` returns its sequence
  number, which the send keeps);
- the window is split into ``buckets`` runs of consecutive sends; each keeps
  how many sends, hard bounces and complaints belong to it, and running
  totals are kept beside them;
- a bounce or complaint names the send it belongs to, however late it comes
  (days, for a DSN), and is counted in that send's run when the run is still
  in the window; once the window has rolled past it, it no longer counts,
  like its send.

The window holds between ``size`` and ``size + size / buckets`` sends: the
oldest run leaves whole when a new one starts. :meth:`RollingWindow.restart`
empties it (a grant reinstated starts afresh): outcomes of sends made before
are then ignored.

:func:`assess` turns a window into a state with the thresholds of a policy.
Below ``min_sample`` sends nothing changes: a small sender whose third message
bounced is not paused on a rate of 33 %. :func:`next_state` applies the rule
that a pause never lifts by itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from .errors import InvalidInput
from .policy import ReputationThresholds

__all__ = [
    "DEFAULT_BUCKETS",
    "Assessment",
    "ReputationLevel",
    "ReputationState",
    "RollingWindow",
    "assess",
    "next_state",
]

DEFAULT_BUCKETS = 10
"""Runs a window is cut into: its size is exact to a tenth."""

_SENDS, _BOUNCES, _COMPLAINTS = 0, 1, 2


class ReputationState(StrEnum):
    """What a subject's rates say about it."""

    HEALTHY = "healthy"
    UNDER_REVIEW = "under_review"
    """Sending continues; the change is an event (``grant.status_changed``)."""
    PAUSED = "paused"
    """Outbound refused until reinstated: a pause never lifts by itself."""


@dataclass(slots=True)
class RollingWindow:
    """Sends, hard bounces and complaints among the most recent ``size`` sends."""

    size: int
    buckets: int = DEFAULT_BUCKETS
    next_seq: int = 0
    """The sequence number the next send gets."""
    start_seq: int = 0
    """Sends numbered below it (before a restart) no longer count."""
    _runs: list[list[int]] = field(default_factory=list, repr=False)
    _totals: list[int] = field(default_factory=lambda: [0, 0, 0], repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise InvalidInput("size", "a window holds at least one send", value=self.size)
        if not isinstance(self.buckets, int) or not 1 <= self.buckets <= self.size:
            raise InvalidInput("buckets", "between 1 and the window's size", value=self.buckets)
        if not self._runs:
            self._runs = [[0, 0, 0] for _ in range(self.buckets + 1)]

    @property
    def run_length(self) -> int:
        """Sends per run: the window's resolution."""
        return -(-self.size // self.buckets)

    def send(self) -> int:
        """Count one send; its sequence number, for its bounce or complaint later."""
        seq = self.next_seq
        length = self.run_length
        if seq % length == 0 and seq > self.start_seq:  # a new run starts: the oldest leaves
            self._clear(self._slot(seq // length))
        self.next_seq = seq + 1
        self._add(seq, _SENDS)
        return seq

    def bounce(self, seq: int) -> bool:
        """Count a hard bounce of send ``seq``; False when that send left the window."""
        return self._outcome(seq, _BOUNCES)

    def complaint(self, seq: int) -> bool:
        """Count a complaint about send ``seq``; False when that send left the window."""
        return self._outcome(seq, _COMPLAINTS)

    def restart(self) -> None:
        """Empty the window: what was sent before no longer counts (reinstatement)."""
        for run in self._runs:
            run[:] = (0, 0, 0)
        self._totals[:] = (0, 0, 0)
        length = self.run_length
        self.next_seq = -(-self.next_seq // length) * length  # start a fresh run
        self.start_seq = self.next_seq

    @property
    def sample(self) -> int:
        """Sends in the window."""
        return self._totals[_SENDS]

    @property
    def bounces(self) -> int:
        """Hard bounces of the sends in the window."""
        return self._totals[_BOUNCES]

    @property
    def complaints(self) -> int:
        """Complaints about the sends in the window."""
        return self._totals[_COMPLAINTS]

    @property
    def bounce_rate(self) -> float:
        """Hard bounces per send in the window (0 when it is empty)."""
        return self.bounces / self.sample if self.sample else 0.0

    @property
    def complaint_rate(self) -> float:
        """Complaints per send in the window (0 when it is empty)."""
        return self.complaints / self.sample if self.sample else 0.0

    def in_window(self, seq: int) -> bool:
        """Whether send ``seq`` still counts."""
        if not self.start_seq <= seq < self.next_seq:
            return False
        newest = (self.next_seq - 1) // self.run_length
        return newest - seq // self.run_length <= self.buckets

    def to_json(self) -> dict[str, Any]:
        """The window as JSON (what the store keeps)."""
        return {
            "size": self.size,
            "buckets": self.buckets,
            "next_seq": self.next_seq,
            "start_seq": self.start_seq,
            "runs": [list(run) for run in self._runs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RollingWindow:
        """The window :meth:`to_json` gave; :class:`InvalidInput` for anything else."""
        try:
            runs = [[int(value) for value in run] for run in data["runs"]]
            window = cls(
                int(data["size"]),
                int(data["buckets"]),
                int(data["next_seq"]),
                int(data["start_seq"]),
                runs,
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("window", "not a reputation window") from None
        if len(runs) != window.buckets + 1 or any(len(run) != 3 for run in runs):
            raise InvalidInput("window", "not a reputation window")
        window._totals = [sum(run[kind] for run in runs) for kind in range(3)]
        return window

    def resized(self, size: int) -> RollingWindow:
        """A window of another ``size`` (a policy change) that starts afresh from here."""
        fresh = RollingWindow(size, min(self.buckets, size))
        fresh.next_seq = fresh.start_seq = self.next_seq
        return fresh

    def _outcome(self, seq: int, kind: int) -> bool:
        if not self.in_window(seq):
            return False
        self._add(seq, kind)
        return True

    def _slot(self, run: int) -> int:
        return run % (self.buckets + 1)

    def _add(self, seq: int, kind: int) -> None:
        self._runs[self._slot(seq // self.run_length)][kind] += 1
        self._totals[kind] += 1

    def _clear(self, slot: int) -> None:
        run = self._runs[slot]
        for kind in (_SENDS, _BOUNCES, _COMPLAINTS):
            self._totals[kind] -= run[kind]
            run[kind] = 0


@dataclass(frozen=True, slots=True)
class Assessment:
    """A window judged against thresholds: the state its rates imply, and why."""

    state: ReputationState
    bounce_rate: float
    complaint_rate: float
    sample: int
    min_sample: int
    reason: str

    def as_json(self) -> dict[str, Any]:
        """The assessment as JSON."""
        return {**asdict(self), "state": self.state.value}


@dataclass(frozen=True, slots=True)
class ReputationLevel:
    """One level of a grant's reputation (``kind``: grant, workspace, domain or
    application; ``subject``: its id, or a domain's name): its window's figures,
    its state and why."""

    kind: str
    subject: str
    state: ReputationState
    sample: int
    bounces: int
    complaints: int
    bounce_rate: float
    complaint_rate: float
    reason: str
    breaker: str = "closed"
    """The grant's circuit breaker (``closed``, ``slow``, ``held``); other levels: closed."""

    def as_json(self) -> dict[str, Any]:
        """The level as JSON."""
        return {**asdict(self), "state": self.state.value}


def assess(
    window: RollingWindow, thresholds: ReputationThresholds, *, min_sample: int
) -> Assessment:
    """The state ``window``'s rates imply under ``thresholds``.

    A rate at a threshold is over it (``bounce_pause=0.10``: 10 % pauses).
    With fewer than ``min_sample`` sends in the window the state is healthy,
    whatever the rates.
    """
    bounce, complaint, sample = window.bounce_rate, window.complaint_rate, window.sample

    def judged(state: ReputationState, reason: str) -> Assessment:
        return Assessment(state, bounce, complaint, sample, min_sample, reason)

    if sample < min_sample:
        return judged(
            ReputationState.HEALTHY,
            f"{sample} sends in the window, fewer than the {min_sample} needed to judge",
        )
    rates = f"bounces {bounce:.2%}, complaints {complaint:.2%} of {sample} sends"
    if bounce >= thresholds.bounce_pause:
        return judged(
            ReputationState.PAUSED,
            f"{rates}: bounces at or over the pause threshold {thresholds.bounce_pause:.2%}",
        )
    if complaint >= thresholds.complaint_pause:
        return judged(
            ReputationState.PAUSED,
            f"{rates}: complaints at or over the pause threshold {thresholds.complaint_pause:.2%}",
        )
    if bounce >= thresholds.bounce_review:
        return judged(
            ReputationState.UNDER_REVIEW,
            f"{rates}: bounces at or over the review threshold {thresholds.bounce_review:.2%}",
        )
    if complaint >= thresholds.complaint_review:
        return judged(
            ReputationState.UNDER_REVIEW,
            f"{rates}: complaints at or over the "
            f"review threshold {thresholds.complaint_review:.2%}",
        )
    return judged(ReputationState.HEALTHY, rates)


def next_state(current: ReputationState, assessment: Assessment) -> ReputationState:
    """The state after ``assessment``: what it says, except that a pause never lifts by
    itself (only a reinstatement does)."""
    if current is ReputationState.PAUSED:
        return current
    return assessment.state
