"""Pacing: when a grant's next message may leave, under its rate, burst, daily quota and ramp.

Pure logic over a :class:`SendClock` (the store keeps one per grant, and one
per domain for its ramp); nothing here reads a clock of its own, so tests
give the time.

- **Rate and burst** follow the generic cell rate algorithm (a token bucket
  kept as one number): ``tat``, the theoretical time the next send is due,
  moves on by the sustained interval per send; a send may leave at
  ``tat - burst * interval``, so ``burst`` messages leave at once and the
  rest are *scheduled*, one per interval (answered ``queued``, with the time
  they leave). Past ``queue_limit`` scheduled sends the answer is
  ``rate_limited``, with the seconds until there is room again.
- **The daily quota** (UTC days) stops a grant for the rest of the day,
  ``retry_after`` the seconds until midnight. Before that, once
  ``pacing_from`` of the quota is used, the rest is spread evenly over the
  remaining day, so a busy agent slows instead of stopping dead.
- **A ramp** (warm-up) caps the distinct recipients mailed since the first
  send: at most N in the first hour, M in the first day... Past the cap the
  answer is ``rate_limited`` until the next step opens.
- **Deferral** (an agent asking for it): instead of ``rate_limited`` the
  message is scheduled when it would be admitted: at the next step of the
  ramp, after the queue of scheduled sends, or on the first later day whose
  quota has room (reserved there, so that day's quota still holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .policy import Policy, RampStep

__all__ = ["DAY", "Admission", "PacingLimits", "SendClock", "admit", "admit_recipients"]

DAY = 86_400.0
"""Seconds in a quota day (UTC)."""


@dataclass(frozen=True, slots=True)
class PacingLimits:
    """What a grant's policy says about pacing, in the units the algorithm uses."""

    interval: float
    """Seconds between sends at the sustained rate."""
    burst: int
    daily_quota: int
    pacing_from: float
    queue_limit: int

    @classmethod
    def of(cls, policy: Policy) -> PacingLimits:
        """The limits of ``policy``."""
        return cls(
            interval=60.0 / policy.send_rate_per_minute,
            burst=policy.send_burst,
            daily_quota=policy.daily_send_quota,
            pacing_from=policy.quota_pacing_from,
            queue_limit=policy.send_queue_limit,
        )


@dataclass(slots=True)
class SendClock:
    """One sender's pacing state: what the store keeps per grant (and per domain)."""

    tat: float = 0.0
    """When the next send is due at the sustained rate (epoch seconds)."""
    day: int = 0
    """The UTC day ``sent_today`` counts (days since the epoch)."""
    sent_today: int = 0
    reserved: dict[int, int] = field(default_factory=dict)
    """Deferred sends reserved on later days: day -> count."""
    warm_since: float | None = None
    """The first send (the ramp's start); None before it."""
    warm_recipients: int = 0
    """Distinct recipients mailed since ``warm_since``, while the ramp lasts."""

    def roll(self, now: float) -> None:
        """Start the day of ``now``: its count is what deferred sends reserved on it."""
        today = int(now // DAY)
        if today != self.day:
            self.day = today
            self.sent_today = self.reserved.pop(today, 0)
            self.reserved = {d: n for d, n in self.reserved.items() if d > today}

    def to_json(self) -> dict[str, Any]:
        """The clock as JSON (what the store keeps)."""
        return {
            "tat": self.tat,
            "day": self.day,
            "sent_today": self.sent_today,
            "reserved": {str(d): n for d, n in self.reserved.items()},
            "warm_since": self.warm_since,
            "warm_recipients": self.warm_recipients,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SendClock:
        """The clock :meth:`to_json` gave (a fresh one for None)."""
        if not data:
            return cls()
        return cls(
            tat=float(data["tat"]),
            day=int(data["day"]),
            sent_today=int(data["sent_today"]),
            reserved={int(d): int(n) for d, n in dict(data.get("reserved") or {}).items()},
            warm_since=None if data.get("warm_since") is None else float(data["warm_since"]),
            warm_recipients=int(data.get("warm_recipients") or 0),
        )


@dataclass(frozen=True, slots=True)
class Admission:
    """The pacing's answer for one message: when it may leave, or why not yet."""

    send_at: float | None
    """When the message may leave (epoch seconds); None: refused (``rate_limited``)."""
    retry_after: float | None = None
    """Refused or deferred: seconds until a send may be admitted again."""
    reason: str = ""
    """Why it is refused, scheduled later or deferred ("" when it leaves now)."""

    @property
    def admitted(self) -> bool:
        """Whether the message is accepted (now, later or deferred)."""
        return self.send_at is not None


def admit(clock: SendClock, limits: PacingLimits, now: float, *, defer: bool = False) -> Admission:
    """Admit one send of ``clock``'s grant under ``limits`` at ``now``: changes the clock
    when it is admitted, leaves it as it was when it is refused."""
    clock.roll(now)
    quota = limits.daily_quota
    midnight = (clock.day + 1) * DAY
    if clock.sent_today >= quota:
        why = f"rate_limited: the daily quota of {quota} sends is used; it resets at 00:00 UTC"
        if not defer or quota == 0:
            return Admission(None, midnight - now, why)
        return _reserve_later_day(clock, limits, now)
    interval, burst = limits.interval, limits.burst
    paced = clock.sent_today >= limits.pacing_from * quota
    if paced:  # near the quota: the rest is spread evenly over the remaining day
        start = max(clock.tat, now)
        interval = max(interval, (midnight - start) / (quota - clock.sent_today))
        burst = 1
    tat = max(clock.tat, now) + interval
    send_at = max(now, tat - burst * interval)
    waiting = (send_at - now) / interval
    if waiting > limits.queue_limit and not defer:
        room = send_at - now - limits.queue_limit * interval
        return Admission(
            None,
            room,
            f"rate_limited: {limits.queue_limit} sends already wait for the send rate",
        )
    clock.tat = tat
    clock.sent_today += 1
    if send_at <= now:
        return Admission(now)
    if paced:
        reason = f"paced: {clock.sent_today} of the daily quota of {quota} used"
    else:
        reason = "scheduled: over the burst, sent as the rate allows"
    return Admission(send_at, None, reason)


def _reserve_later_day(clock: SendClock, limits: PacingLimits, now: float) -> Admission:
    """Defer a send past a used quota: reserve it on the first later day with room."""
    day = clock.day + 1
    while clock.reserved.get(day, 0) >= limits.daily_quota:
        day += 1
    taken = clock.reserved.get(day, 0)
    clock.reserved[day] = taken + 1
    send_at = day * DAY + taken * limits.interval
    return Admission(
        send_at,
        send_at - now,
        f"deferred: the daily quota is used; it leaves on day {day} (UTC) with its quota",
    )


def admit_recipients(
    clock: SendClock,
    ramp: tuple[RampStep, ...],
    now: float,
    new_recipients: int,
    *,
    defer: bool = False,
    who: str = "grant",
) -> Admission:
    """Admit ``new_recipients`` recipients never mailed before under a warm-up ``ramp``:
    changes the clock when admitted (its start, its count)."""
    since = clock.warm_since if clock.warm_since is not None else now
    age = now - since
    current = next((i for i, step in enumerate(ramp) if age < step.within), None)
    if current is None or new_recipients == 0:
        if clock.warm_since is None and new_recipients:
            clock.warm_since = now
        if current is not None or clock.warm_since is None:
            clock.warm_recipients += new_recipients
        return Admission(now)
    wanted = clock.warm_recipients + new_recipients
    step = ramp[current]
    if wanted <= step.recipients:
        clock.warm_since = since
        clock.warm_recipients = wanted
        return Admission(now)
    opens = since + step.within
    why = (
        f"rate_limited: warm-up of a new {who}: at most {step.recipients} distinct "
        f"recipients in its first {_span(step.within)}"
    )
    if not defer:
        return Admission(None, opens - now, why)
    # it leaves when the first step that admits it opens (the previous one ends), or
    # when the ramp is over
    opening = next(
        (ramp[i - 1].within for i in range(current + 1, len(ramp)) if wanted <= ramp[i].recipients),
        ramp[-1].within,
    )
    send_at = since + opening
    clock.warm_since = since
    clock.warm_recipients = wanted
    return Admission(send_at, send_at - now, "deferred: " + why.removeprefix("rate_limited: "))


def _span(seconds: float) -> str:
    for unit, length in (("week", 604_800), ("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= length and seconds % length == 0:
            count = int(seconds // length)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"
