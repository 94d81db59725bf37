"""Reputation in memory: the rolling window of recent sends, and the states its rates imply."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailfleet.model.errors import InvalidInput
from mailfleet.model.policy import ReputationThresholds
from mailfleet.model.reputation import (
    ReputationState,
    RollingWindow,
    assess,
    next_state,
)

PLATFORM = ReputationThresholds()


def window_with(
    sends: int, bounces: int = 0, complaints: int = 0, size: int = 1000
) -> RollingWindow:
    window = RollingWindow(size)
    seqs = [window.send() for _ in range(sends)][::-1]  # newest first: still in the window
    for seq in seqs[:bounces]:
        assert window.bounce(seq)
    for seq in seqs[bounces : bounces + complaints]:
        assert window.complaint(seq)
    return window


def state_of(window: RollingWindow, min_sample: int = 100) -> ReputationState:
    return assess(window, PLATFORM, min_sample=min_sample).state


@pytest.mark.parametrize(
    ("bounces", "complaints", "state"),
    [
        (0, 0, ReputationState.HEALTHY),
        (49, 0, ReputationState.HEALTHY),  # 4.9 %: just below review
        (50, 0, ReputationState.UNDER_REVIEW),  # 5 %: at review
        (51, 0, ReputationState.UNDER_REVIEW),
        (99, 0, ReputationState.UNDER_REVIEW),  # 9.9 %: just below pause
        (100, 0, ReputationState.PAUSED),  # 10 %: at pause
        (101, 0, ReputationState.PAUSED),
        (0, 1, ReputationState.UNDER_REVIEW),  # 0.1 %: complaints at review
        (0, 4, ReputationState.UNDER_REVIEW),  # 0.4 %: just below pause
        (0, 5, ReputationState.PAUSED),  # 0.5 %: at pause
        (0, 6, ReputationState.PAUSED),
        (20, 4, ReputationState.UNDER_REVIEW),  # 2 % and 0.4 %
    ],
)
def test_each_threshold_below_at_and_above(
    bounces: int, complaints: int, state: ReputationState
) -> None:
    window = window_with(1000, bounces, complaints)
    assessment = assess(window, PLATFORM, min_sample=100)
    assert assessment.state is state
    assert assessment.sample == 1000
    assert assessment.bounce_rate == bounces / 1000


def test_complaints_just_below_review() -> None:
    window = window_with(1001, 0, 1)  # 0.0999 %
    assert state_of(window) is ReputationState.HEALTHY


def test_a_workspace_may_be_stricter() -> None:
    strict = ReputationThresholds(bounce_review=0.02, bounce_pause=0.04)
    window = window_with(1000, 30)
    assert assess(window, strict, min_sample=100).state is ReputationState.UNDER_REVIEW
    assert state_of(window) is ReputationState.HEALTHY


def test_below_the_minimum_sample_nothing_changes() -> None:
    small = window_with(99, 50)
    assessment = assess(small, PLATFORM, min_sample=100)
    assert assessment.state is ReputationState.HEALTHY
    assert "fewer than the 100 needed" in assessment.reason
    small.send()
    assert state_of(small) is ReputationState.PAUSED  # the 100th send: now it counts


def test_a_late_bounce_counts_for_its_send_while_the_send_is_in_the_window() -> None:
    window = RollingWindow(100, buckets=10)
    first = window.send()
    for _ in range(50):
        window.send()
    assert window.bounce(first)  # days later, 50 sends on: still in the window
    assert window.bounces == 1
    for _ in range(100):
        window.send()
    assert window.bounces == 0  # its send left the window: so did its bounce
    assert not window.in_window(first)
    assert not window.bounce(first)  # too late now: not counted
    assert not window.bounce(window.next_seq)  # a send that never happened


def test_the_window_rolls_over_the_most_recent_sends_only() -> None:
    window = RollingWindow(100, buckets=10)
    for _ in range(100):
        assert window.bounce(window.send())
    assert window.bounce_rate == 1.0
    for _ in range(110):
        window.send()
    assert window.sample in range(100, 111)
    assert window.bounces == 0


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(10, 300),
    buckets=st.integers(1, 10),
    events=st.lists(st.tuples(st.booleans(), st.integers(0, 400)), max_size=600),
)
def test_the_window_agrees_with_a_plain_list_of_the_recent_sends(
    size: int, buckets: int, events: list[tuple[bool, int]]
) -> None:
    """Against the obvious implementation: the sends of the runs still held, counted anew."""
    window = RollingWindow(size, buckets)
    bounced: set[int] = set()
    for is_send, back in events:
        if is_send or window.next_seq == 0:
            window.send()
            continue
        seq = max(window.next_seq - 1 - back, 0)
        if seq not in bounced and window.bounce(seq):
            bounced.add(seq)
    held = [seq for seq in range(window.next_seq) if window.in_window(seq)]
    assert window.sample == len(held)
    assert window.bounces == len(bounced & set(held))
    assert len(held) <= size + window.run_length  # the window's size, to one run
    if window.next_seq >= size:
        assert len(held) >= size
    else:
        assert len(held) == window.next_seq


def test_a_pause_never_lifts_by_itself_and_a_restart_starts_afresh() -> None:
    window = window_with(1000, 100)
    state = next_state(ReputationState.HEALTHY, assess(window, PLATFORM, min_sample=100))
    assert state is ReputationState.PAUSED
    before = [window.send() for _ in range(5)]
    for _ in range(3000):
        window.send()  # the window rolls clean...
    assert state_of(window) is ReputationState.HEALTHY
    assert next_state(state, assess(window, PLATFORM, min_sample=100)) is ReputationState.PAUSED
    window.restart()  # ...but only reinstatement lifts it, and the window starts empty
    assert (window.sample, window.bounces) == (0, 0)
    assert not window.bounce(before[0])  # a send from before the restart no longer counts
    fresh = window.send()
    assert window.bounce(fresh)
    under_review = next_state(ReputationState.UNDER_REVIEW, assess(window, PLATFORM, min_sample=1))
    assert under_review is ReputationState.PAUSED  # 1 of 1: review can move either way


def test_the_window_round_trips_through_json() -> None:
    window = window_with(250, 7, 2, size=200)
    again = RollingWindow.from_json(window.to_json())
    assert again.to_json() == window.to_json()
    assert (again.sample, again.bounces, again.complaints) == (
        window.sample,
        window.bounces,
        window.complaints,
    )
    with pytest.raises(InvalidInput, match="not a reputation window"):
        RollingWindow.from_json({"size": 10})
    with pytest.raises(InvalidInput, match="not a reputation window"):
        RollingWindow.from_json({**window.to_json(), "runs": [[1, 2, 3]]})


def test_a_resized_window_starts_afresh_from_the_same_sequence() -> None:
    window = window_with(300, 10, size=200)
    bigger = window.resized(500)
    assert (bigger.size, bigger.sample, bigger.next_seq) == (500, 0, window.next_seq)


def test_bad_windows_are_refused() -> None:
    with pytest.raises(InvalidInput, match="at least one send"):
        RollingWindow(0)
    with pytest.raises(InvalidInput, match="between 1 and"):
        RollingWindow(5, buckets=6)
