"""The settled position of a log whose ids may appear out of order (pure logic)."""

from __future__ import annotations

import random

import pytest

from mailfleet.model.frontier import Frontier


def test_contiguous_ids_are_passed_at_once() -> None:
    frontier = Frontier(0, settle=2.0)
    assert frontier.advance([1, 2, 3], now=0.0) == 3
    assert frontier.advance([4], now=0.0) == 4
    assert frontier.advance([], now=10.0) == 4
    assert frontier.advance([2, 3], now=10.0) == 4  # ids already passed change nothing


def test_a_missing_id_holds_the_frontier_until_it_appears() -> None:
    frontier = Frontier(10, settle=2.0)
    assert frontier.advance([11, 13, 14], now=0.0) == 11
    assert frontier.waiting_since == 0.0
    assert frontier.advance([13, 14], now=1.9) == 11  # 12 still in flight
    assert frontier.advance([12, 13, 14, 15], now=1.95) == 15
    assert frontier.waiting_since is None


def test_a_missing_id_is_passed_after_the_settle_time() -> None:
    frontier = Frontier(0, settle=2.0)
    assert frontier.advance([1, 3], now=100.0) == 1
    assert frontier.advance([3], now=101.0) == 1
    assert frontier.advance([3, 4], now=102.0) == 4  # 2 rolled back, or committed too late
    assert frontier.advance([2], now=103.0) == 4  # what comes later is behind it


def test_the_time_a_gap_was_first_seen_is_kept_as_it_fills_and_grows() -> None:
    frontier = Frontier(0, settle=2.0)
    frontier.advance([1, 6], now=0.0)  # 2..5 missing since 0
    # 3 and 5 appear; 2 and 4 are still missing (since 0); 7..9 are new gaps (since 1.5)
    assert frontier.advance([3, 5, 6, 10], now=1.5) == 1
    assert frontier.advance([3, 5, 6, 10], now=2.0) == 6  # 2 and 4 are old enough
    assert frontier.waiting_since == 1.5
    assert frontier.advance([10], now=3.0) == 6
    assert frontier.advance([10], now=3.5) == 10


def test_the_frontier_never_passes_an_id_that_appears_within_the_settle_time() -> None:
    """Ids committed in a random order, each within the settle time: the frontier
    reaches each id only once every lower id was visible."""
    rng = random.Random(7)
    for _ in range(200):
        ids = list(range(1, 60))
        order = ids[:]
        rng.shuffle(order)
        visible: set[int] = set()
        frontier = Frontier(0, settle=5.0)
        now = 0.0
        for i in order:
            visible.add(i)
            now += 0.01
            position = frontier.advance(sorted(visible), now)
            assert all(j in visible for j in range(1, position + 1))
        assert frontier.position == 59


def test_settle_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="settle"):
        Frontier(0, settle=-1)
