"""The circuit breaker: the runtime slows, then holds, a sender before a provider pauses it.

The platform pauses a grant at its pause thresholds; the breaker acts
before that, on the same rolling window (:mod:`mailfleet.model.reputation`):

- its **risk** is how near the window's rates are to pausing: the larger of
  ``bounce_rate / bounce_pause`` and ``complaint_rate / complaint_pause``
  (1.0: at the threshold), counted from the minimum sample on;
- from ``slow_at`` the sender is **slow** (one message per ``slowdown``
  sustained intervals), from ``hold_at`` it is **held** (one probe per
  ``probe_interval``);
- whatever the risk, a message is held when it, and every message of its
  sender still in flight, bouncing would reach the bounce pause: the breaker
  never lets a sender reach the pause threshold through sends it could have
  held (:func:`releasable`). Complaints come days after delivery, from mail
  long out of reach, so they weigh through the risk alone.

Probes that are delivered roll the window forward: the old bounces leave it,
the risk falls and the breaker closes by itself. Only a pause (the platform's
verdict) waits for an operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .policy import CircuitBreaker, ReputationThresholds
from .reputation import ReputationState, RollingWindow, assess

__all__ = ["BreakerState", "BreakerVerdict", "judge", "releasable", "risk"]


class BreakerState(StrEnum):
    """Where a sender's breaker stands."""

    CLOSED = "closed"
    """Mail leaves at the policy's rate."""
    SLOW = "slow"
    """One message per ``slowdown`` sustained intervals."""
    HELD = "held"
    """One probe per ``probe_interval`` (none while a probe could pause the sender)."""


@dataclass(frozen=True, slots=True)
class BreakerVerdict:
    """A breaker's state for one window, its risk and why."""

    state: BreakerState
    risk: float
    reason: str


def risk(window: RollingWindow, thresholds: ReputationThresholds, *, min_sample: int) -> float:
    """How near ``window`` is to its pause: 1.0 at a pause threshold, 0 below the minimum
    sample (too few sends to judge; :func:`releasable` still guards the crossing)."""
    if window.sample < min_sample:
        return 0.0
    level = max(
        window.bounce_rate / thresholds.bounce_pause,
        window.complaint_rate / thresholds.complaint_pause,
    )
    return round(level, 9)  # 8 % of a 10 % pause is 0.8, not 0.7999999999999999


def judge(
    window: RollingWindow,
    thresholds: ReputationThresholds,
    breaker: CircuitBreaker,
    *,
    min_sample: int,
) -> BreakerVerdict:
    """The breaker's state for ``window`` (closed when the breaker is disabled)."""
    level = risk(window, thresholds, min_sample=min_sample)
    if not breaker.enabled or level < breaker.slow_at:
        return BreakerVerdict(BreakerState.CLOSED, level, f"at {level:.0%} of the pause threshold")
    state = BreakerState.HELD if level >= breaker.hold_at else BreakerState.SLOW
    limit = breaker.hold_at if state is BreakerState.HELD else breaker.slow_at
    return BreakerVerdict(
        state,
        level,
        f"rates at {level:.0%} of the pause threshold "
        f"(bounces {window.bounce_rate:.2%}, complaints {window.complaint_rate:.2%} of "
        f"{window.sample} sends), {state.value} from {limit:.0%}",
    )


def releasable(
    window: RollingWindow,
    thresholds: ReputationThresholds,
    *,
    min_sample: int,
    in_flight: int,
    wanted: int,
) -> int:
    """How many of ``wanted`` further sends may leave while ``in_flight`` are unresolved,
    so that even if all of them bounced the window would not reach the bounce pause.
    O(1) when even that worst case stays clear of it, else O(``in_flight + wanted``)
    on a copy of the window."""
    more = in_flight + wanted
    if _clear(window, thresholds, min_sample=min_sample, more=more):
        return wanted
    worst = RollingWindow.from_json(window.to_json())
    released = 0
    for n in range(in_flight + wanted):
        worst.bounce(worst.send())
        if _paused(worst, thresholds, min_sample):
            break
        if n >= in_flight:
            released += 1
    return released


def _clear(
    window: RollingWindow, thresholds: ReputationThresholds, *, min_sample: int, more: int
) -> bool:
    """Whether ``more`` sends, all bounced, surely stay below the bounce pause (and the
    window's complaints below theirs): a full window never holds fewer than ``size``
    sends, so the bounce rate after them is at most
    ``(bounces + more) / min(size, sample + more)``."""
    sample = window.sample + more
    if sample < min_sample:
        return True
    least = min(window.size, sample)
    return (window.bounces + more) / least < thresholds.bounce_pause and (
        window.complaints / least < thresholds.complaint_pause
    )


def _paused(window: RollingWindow, thresholds: ReputationThresholds, min_sample: int) -> bool:
    return assess(window, thresholds, min_sample=min_sample).state is ReputationState.PAUSED
