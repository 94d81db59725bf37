"""Pacing as pure logic on a clock the test gives: rate and burst, the queue of scheduled
sends, the daily quota and its pacing, deferral, and the warm-up ramps."""

from __future__ import annotations

from itertools import pairwise

import pytest

from mailfleet import InvalidPolicy
from mailfleet.model.pacing import DAY, PacingLimits, SendClock, admit, admit_recipients
from mailfleet.model.policy import Policy, RampStep

NOON = 20_000 * DAY + DAY / 2  # a UTC day's noon: half a day to midnight


def limits(**changes: object) -> PacingLimits:
    values = {"send_rate_per_minute": 60.0, "send_burst": 3, "daily_send_quota": 1_000}
    return PacingLimits.of(Policy.parse({**values, **changes}))


def test_a_burst_leaves_at_once_and_the_rest_one_per_interval() -> None:
    clock, rules = SendClock(), limits()
    answers = [admit(clock, rules, NOON) for _ in range(6)]
    assert [a.send_at for a in answers] == [NOON, NOON, NOON, NOON + 1, NOON + 2, NOON + 3]
    assert [a.reason for a in answers[:3]] == ["", "", ""]
    assert answers[3].reason.startswith("scheduled")
    # idle for a while: the bucket fills again, up to the burst
    later = [admit(clock, rules, NOON + 100).send_at for _ in range(4)]
    assert later == [NOON + 100] * 3 + [NOON + 101]


def test_past_the_queue_bound_a_send_is_rate_limited_with_when_there_is_room() -> None:
    clock, rules = SendClock(), limits(send_queue_limit=2)
    admitted = [admit(clock, rules, NOON) for _ in range(5)]  # 3 at once, 2 scheduled
    assert all(a.admitted for a in admitted)
    refused = admit(clock, rules, NOON)
    assert refused.send_at is None
    assert refused.retry_after == pytest.approx(1.0)  # the first scheduled one leaves
    assert "2 sends already wait" in refused.reason
    assert clock.sent_today == 5  # a refusal changes nothing
    assert admit(clock, rules, NOON + 1).admitted


def test_the_daily_quota_answers_retry_after_midnight_and_resets_there() -> None:
    clock, rules = SendClock(), limits(daily_send_quota=4, quota_pacing_from=1.0, send_burst=10)
    assert all(admit(clock, rules, NOON).admitted for _ in range(4))
    refused = admit(clock, rules, NOON + 10)
    assert refused.send_at is None
    assert refused.retry_after == pytest.approx(DAY / 2 - 10)
    assert "daily quota of 4 sends" in refused.reason
    tomorrow = NOON + DAY / 2 + 1
    assert admit(clock, rules, tomorrow).send_at == tomorrow
    assert clock.sent_today == 1


def test_near_the_quota_the_rest_is_spread_over_the_remaining_day() -> None:
    clock = SendClock()
    rules = limits(daily_send_quota=10, quota_pacing_from=0.5, send_burst=10)
    first = [admit(clock, rules, NOON).send_at for _ in range(5)]
    assert first == [NOON] * 5  # half the quota: no pacing yet
    paced = [admit(clock, rules, NOON) for _ in range(5)]
    times = [a.send_at for a in paced]
    assert all(a.reason.startswith("paced") for a in paced[1:])
    assert times[0] == NOON + 5  # the sustained rate still holds: 5 sends, 1 s each
    gaps = [b - a for a, b in pairwise(t for t in times if t is not None)]
    assert all(gap >= DAY / 2 / 5 - 1 for gap in gaps)  # spread, not stopped dead
    assert times[-1] < NOON + DAY / 2  # all within the day


def test_a_deferred_send_is_scheduled_instead_of_refused() -> None:
    clock, rules = SendClock(), limits(daily_send_quota=2, quota_pacing_from=1.0, send_burst=5)
    assert all(admit(clock, rules, NOON).admitted for _ in range(2))
    deferred = [admit(clock, rules, NOON, defer=True) for _ in range(3)]
    midnight = NOON + DAY / 2
    assert deferred[0].send_at == midnight  # on the next day, with its quota
    assert deferred[1].send_at == midnight + 1
    assert deferred[2].send_at == midnight + DAY  # the next day is full too
    assert all(a.reason.startswith("deferred") for a in deferred)
    # the next day starts with the two reserved on it
    assert admit(clock, rules, midnight + 5).send_at is None


def test_a_quota_of_zero_refuses_even_a_deferred_send() -> None:
    clock = SendClock()
    assert not admit(clock, limits(daily_send_quota=0), NOON, defer=True).admitted


RAMP = (RampStep(within=3_600, recipients=3), RampStep(within=86_400, recipients=5))


def test_the_ramp_caps_distinct_recipients_until_its_next_step_opens() -> None:
    clock = SendClock()
    assert admit_recipients(clock, RAMP, NOON, 2).admitted
    assert clock.warm_since == NOON
    assert admit_recipients(clock, RAMP, NOON + 10, 1).admitted  # 3 of 3
    refused = admit_recipients(clock, RAMP, NOON + 600, 1)
    assert refused.send_at is None
    assert refused.retry_after == pytest.approx(3_000)  # the first hour ends
    assert "at most 3 distinct recipients in its first hour" in refused.reason
    assert admit_recipients(clock, RAMP, NOON + 600, 0).admitted  # known recipients: fine
    assert admit_recipients(clock, RAMP, NOON + 3_600, 2).admitted  # 5 of 5 in the first day
    assert not admit_recipients(clock, RAMP, NOON + 7_200, 1).admitted
    assert admit_recipients(clock, RAMP, NOON + 86_400, 100).admitted  # warmed up
    assert clock.warm_recipients == 5  # nobody counted past the ramp


def test_a_deferred_send_over_the_ramp_waits_for_the_step_that_admits_it() -> None:
    clock = SendClock()
    assert admit_recipients(clock, RAMP, NOON, 3).admitted
    deferred = admit_recipients(clock, RAMP, NOON, 2, defer=True)
    assert deferred.send_at == NOON + 3_600
    beyond = admit_recipients(clock, RAMP, NOON, 10, defer=True)
    assert beyond.send_at == NOON + 86_400  # after the ramp


SHRINKING = {"within": 30, "recipients": 10}


def test_ramps_must_grow_and_the_breaker_must_be_ordered() -> None:
    with pytest.raises(InvalidPolicy) as caught:
        Policy.parse(
            {
                "warmup": {
                    "grant": [{"within": 60, "recipients": 9}, {"within": 30, "recipients": 10}]
                }
            }
        )
    assert caught.value.field == "policy.warmup.grant"
    with pytest.raises(InvalidPolicy) as caught:
        Policy().updated({"breaker": {"slow_at": 0.9, "hold_at": 0.5}})
    assert caught.value.field == "policy.breaker.slow_at"
    assert Policy().updated({"breaker": {"hold_at": 0.9}}).breaker.slow_at == 0.5


def test_the_clock_round_trips_through_json() -> None:
    clock = SendClock()
    admit(clock, limits(daily_send_quota=1, quota_pacing_from=1.0), NOON)
    admit(clock, limits(daily_send_quota=1, quota_pacing_from=1.0), NOON, defer=True)
    admit_recipients(clock, RAMP, NOON, 2)
    assert SendClock.from_json(clock.to_json()) == clock
    assert SendClock.from_json(None) == SendClock()
