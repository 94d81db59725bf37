"""Reputation in memory: rolling-window updates per second, and judging a window per send.

* **Updates**: one update is a send counted, or a hard bounce or complaint
  attributed to its send (one in ten sends bounces, half of those late, up
  to a window's length after their send). Measured on mailfleet's
  ``RollingWindow`` (bucketed, late outcomes attributed to their send) and,
  as the baseline, on the obvious window: a ``collections.deque`` of the
  last N outcomes with running counts, which can only count an outcome when
  it is known at send time (it cannot attribute a late bounce at all).
* **Gate**: what the runtime decides per send in memory, in microseconds:
  ``assess`` (the rates against a policy's thresholds, the minimum sample,
  the reason) and ``next_state``; the breaker's verdict (``judge``) and its
  in-flight guard (``releasable``); the pacing (``admit``: rate, burst,
  daily quota) and the warm-up ramp (``admit_recipients``).

* **Store**: sends counted through the store, as the sender records them
  (``store.reputation.record_sends``: the four windows of a grant read,
  changed and written back under row locks, the sequence numbers kept),
  batches of ``STORE_BATCH`` recipients per transaction, on SQLite and
  PostgreSQL; an update is one send at one level.

Usage (from the repository root)::

    .venv/bin/python bench/reputation.py

The last line is one JSON object with ``reputation_updates_per_s``,
``baseline_updates_per_s``, ``ratio``, ``gate_us_per_send`` and
``store_sqlite_updates_per_s`` / ``store_postgres_updates_per_s``.
"""

from __future__ import annotations

import collections
import random

import anyio
from _common import BACKENDS, emit, median, scratch_database, stopwatch

from mailfleet import Fleet
from mailfleet.model.breaker import judge, releasable
from mailfleet.model.pacing import PacingLimits, SendClock, admit, admit_recipients
from mailfleet.model.policy import Policy, ReputationThresholds
from mailfleet.model.reputation import ReputationState, RollingWindow, assess, next_state
from mailfleet.store import reputation

SIZE = 1_000
SENDS = 300_000
ROUNDS = 5
STORE_BATCH = 50
STORE_BATCHES = 100


def plan(seed: int) -> list[int]:
    """For each send, how many sends later its bounce arrives (-1: it does not bounce)."""
    rng = random.Random(seed)
    return [
        (0 if rng.random() < 0.5 else rng.randrange(1, SIZE)) if rng.random() < 0.1 else -1
        for _ in range(SENDS)
    ]


def ours(delays: list[int]) -> tuple[int, float]:
    """Updates made and seconds taken, on RollingWindow."""
    window = RollingWindow(SIZE)
    due: dict[int, list[int]] = collections.defaultdict(list)
    updates = 0
    with stopwatch() as elapsed:
        for index, delay in enumerate(delays):
            seq = window.send()
            updates += 1
            if delay == 0:
                window.bounce(seq)
                updates += 1
            elif delay > 0:
                due[index + delay].append(seq)
            late = due.pop(index, None)
            if late:
                for earlier in late:
                    window.bounce(earlier)
                    updates += 1
    return updates, elapsed()


def baseline(delays: list[int]) -> tuple[int, float]:
    """The same outcomes on a deque of the last SIZE sends (a bounce known at send time)."""
    recent: collections.deque[bool] = collections.deque(maxlen=SIZE)
    bounces = 0
    updates = 0
    with stopwatch() as elapsed:
        for delay in delays:
            bounced = delay >= 0
            if len(recent) == SIZE and recent[0]:
                bounces -= 1
            recent.append(bounced)
            bounces += bounced
            updates += 2 if bounced else 1
    return updates, elapsed()


def gate_us(window: RollingWindow, thresholds: ReputationThresholds, rounds: int) -> float:
    """Every in-memory decision a send passes, per send (microseconds)."""
    policy = Policy.parse({"daily_send_quota": rounds + 1, "send_burst": rounds + 1})
    limits, breaker, ramp = PacingLimits.of(policy), policy.breaker, policy.warmup.grant
    clock, now = SendClock(), 1_800_000_000.0
    state = ReputationState.HEALTHY
    with stopwatch() as elapsed:
        for _ in range(rounds):
            state = next_state(state, assess(window, thresholds, min_sample=100))
            judge(window, thresholds, breaker, min_sample=100)
            releasable(window, thresholds, min_sample=100, in_flight=0, wanted=1)
            admit(clock, limits, now)
            admit_recipients(clock, ramp, now, 0)
    return elapsed() / rounds * 1e6


async def through_store(url: str) -> float:
    """Window updates per second through the store (four levels per send)."""
    async with Fleet(database_url=url, application="bench") as fleet:
        await fleet.add_domain("example.com")
        grants = [(await fleet.provision(f"g{n}@example.com")).id for n in range(10)]
        scope = fleet._open("bench").scope  # the store itself, without the sender
        with stopwatch() as elapsed:
            for batch in range(STORE_BATCHES):
                sends = [
                    (batch * STORE_BATCH + n, grants[n % len(grants)], f"r{n}@example.org")
                    for n in range(STORE_BATCH)
                ]
                await scope.write(lambda tx, sends=sends: reputation.record_sends(tx, sends))
        return STORE_BATCHES * STORE_BATCH * len(reputation.KINDS) / elapsed()


def store_rates() -> dict[str, float]:
    rates: dict[str, float] = {}
    for backend in BACKENDS:
        with scratch_database(backend) as url:
            rates[backend] = anyio.run(through_store, url)
    return rates


def main() -> None:
    ours_rates: list[float] = []
    base_rates: list[float] = []
    for round_number in range(ROUNDS):
        delays = plan(round_number)
        done, seconds = ours(delays)
        ours_rates.append(done / seconds)
        done, seconds = baseline(delays)
        base_rates.append(done / seconds)
    window = RollingWindow(SIZE)
    for n in range(5_000):
        seq = window.send()
        if n % 25 == 0:
            window.bounce(seq)
    gate = median([gate_us(window, ReputationThresholds(), 100_000) for _ in range(ROUNDS)])
    ours_rate, base_rate = median(ours_rates), median(base_rates)
    print(
        f"updates: RollingWindow {ours_rate:,.0f}/s (late bounces attributed to their send), "
        f"deque baseline {base_rate:,.0f}/s (no late attribution); medians of {ROUNDS} rounds"
    )
    print(f"gate: assess, breaker, in-flight guard, pacing and ramp {gate:.2f} us per send")
    stored = store_rates()
    for backend, rate in stored.items():
        print(f"store ({backend}): {rate:,.0f} window updates/s, {STORE_BATCH} sends a transaction")
    emit(
        {
            "reputation_updates_per_s": ours_rate,
            "baseline_updates_per_s": base_rate,
            "ratio": ours_rate / base_rate,
            "gate_us_per_send": gate,
            **{f"store_{backend}_updates_per_s": rate for backend, rate in stored.items()},
        }
    )


if __name__ == "__main__":
    main()
