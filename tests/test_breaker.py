"""The circuit breaker: pure verdicts on a window, then through the runtime with a real relay
peer: it slows and holds a grant before its pause, never lets sends in flight carry it
there, and reopens by itself as delivered probes roll the window."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mailfleet import Fleet, GrantStatus
from mailfleet.model.breaker import BreakerState, judge, releasable, risk
from mailfleet.model.policy import CircuitBreaker, ReputationThresholds
from mailfleet.model.reputation import RollingWindow
from relay import relay_peer
from sending import SENDER, fleet_sending, levels, refuse, send_to

THRESHOLDS = ReputationThresholds()  # bounces: pause at 10 %
BREAKER = CircuitBreaker()  # slow from 50 %, held from 80 % of the pause threshold


def window(sends: int, bounces: int = 0, complaints: int = 0, size: int = 1_000) -> RollingWindow:
    made = RollingWindow(size)
    seqs = [made.send() for _ in range(sends)]
    for seq in seqs[:bounces]:
        made.bounce(seq)
    for seq in seqs[bounces : bounces + complaints]:
        made.complaint(seq)
    return made


@pytest.mark.parametrize(
    ("bounces", "state"),
    [
        (49, BreakerState.CLOSED),  # 4.9 %: 49 % of the pause
        (50, BreakerState.SLOW),  # 5 %: at slow_at
        (79, BreakerState.SLOW),
        (80, BreakerState.HELD),  # 8 %: at hold_at
        (95, BreakerState.HELD),
    ],
)
def test_the_verdict_at_each_boundary(bounces: int, state: BreakerState) -> None:
    verdict = judge(window(1_000, bounces), THRESHOLDS, BREAKER, min_sample=100)
    assert verdict.state is state
    assert verdict.risk == pytest.approx(bounces / 100)


def test_complaints_count_against_their_own_threshold() -> None:
    # 4 complaints of 1,000: 0.4 % against a pause at 0.5 %: 80 %
    assert judge(window(1_000, complaints=4), THRESHOLDS, BREAKER, min_sample=100).state is (
        BreakerState.HELD
    )


def test_below_the_minimum_sample_there_is_no_risk_and_a_disabled_breaker_stays_closed() -> None:
    assert risk(window(50, 25), THRESHOLDS, min_sample=100) == 0.0
    off = CircuitBreaker(enabled=False)
    assert judge(window(1_000, 95), THRESHOLDS, off, min_sample=100).state is BreakerState.CLOSED


def test_releasable_keeps_the_worst_case_below_the_pause() -> None:
    assert releasable(window(1_000), THRESHOLDS, min_sample=100, in_flight=0, wanted=50) == 50
    # 95 of 1,000: 5 more bounces would make 100 of 1,005 (9.95 %), a sixth 10.04 %
    near = window(1_000, 95)
    assert releasable(near, THRESHOLDS, min_sample=100, in_flight=0, wanted=50) == 5
    assert releasable(near, THRESHOLDS, min_sample=100, in_flight=3, wanted=50) == 2
    assert releasable(near, THRESHOLDS, min_sample=100, in_flight=5, wanted=50) == 0
    # the crossing of the minimum sample is guarded too: 99 sends with 12 bounces
    small = window(99, 12)
    assert releasable(small, THRESHOLDS, min_sample=100, in_flight=0, wanted=5) == 0
    assert releasable(window(10, 9), THRESHOLDS, min_sample=100, in_flight=0, wanted=5) == 5


# -- through the runtime ------------------------------------------------------------------

POLICY: dict[str, Any] = {
    "reputation_window": 50,
    "reputation_min_sample": 20,
    "send_rate_per_minute": 60_000,
    "send_burst": 1_000,
    "warmup": {"grant": [], "domain": []},
    "breaker": {"slow_at": 0.3, "hold_at": 0.6, "probe_interval": 0.05},
}


async def transitions(fleet: Fleet) -> list[tuple[str, str]]:
    events = sorted(await fleet.events(type="grant.breaker_changed", limit=10_000), key=_id)
    return [(e.payload["from"], e.payload["to"]) for e in events]


def _id(event: Any) -> int:
    return int(event.id)


async def outbox_statuses(fleet: Fleet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in await fleet.outbox(limit=10_000):
        counts[item.status] = counts.get(item.status, 0) + 1
    return counts


@pytest.mark.anyio
async def test_the_breaker_holds_sends_in_flight_short_of_the_pause(database_url: str) -> None:
    async with relay_peer() as peer, fleet_sending(database_url, peer, policy=POLICY) as fleet:
        await send_to(fleet, peer, [f"ok{n}@example.org" for n in range(40)])
        bad = [f"gone{n}@example.org" for n in range(20)]
        refuse(peer, *bad)
        for to in bad:  # all at once: without the breaker, 20 of 60 would bounce
            assert (await fleet.send(SENDER, to, subject="Offer", text="Hello.")).ok
        with anyio.fail_after(20):
            while (await outbox_statuses(fleet)).get("bounced", 0) < 4:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        await anyio.sleep(0.5)  # probes would have left by now
        # 4 bounces of 44 sends is 9.1 %: a fifth would have been 10.9 %, a pause
        assert await outbox_statuses(fleet) == {"sent": 40, "bounced": 4, "pending": 16}
        grant = (await levels(fleet))["grant"]
        assert (grant.sample, grant.bounces, grant.breaker) == (44, 4, "held")
        assert (await fleet.grant(SENDER)).status is GrantStatus.UNDER_REVIEW  # never paused
        assert (await transitions(fleet))[-1][1] == "held"
        assert len(peer.received) == 40


@pytest.mark.anyio
async def test_the_breaker_slows_holds_and_reopens_as_probes_roll_the_window(
    database_url: str,
) -> None:
    async with relay_peer() as peer, fleet_sending(database_url, peer, policy=POLICY) as fleet:
        await send_to(fleet, peer, [f"ok{n}@example.org" for n in range(40)])
        bad = ["gone1@example.org", "gone2@example.org", "gone3@example.org"]
        refuse(peer, *bad)
        for to in bad:  # one by one: 1 of 41, 2 of 42 (slow), 3 of 43 (held)
            await send_to(fleet, peer, [to])
        # good mail from here: the probes are delivered and the bounces leave the window
        await send_to(fleet, peer, [f"later{n}@example.org" for n in range(60)])
        with anyio.fail_after(20):
            while (await transitions(fleet))[-1][1] != "closed":  # noqa: ASYNC110
                await anyio.sleep(0.05)
        seen = await transitions(fleet)
        assert seen[:2] == [("closed", "slow"), ("slow", "held")]  # the breaker acted...
        assert seen[-1] == ("slow", "closed")  # ...and reopened by itself, through slow
        grant = (await levels(fleet))["grant"]
        assert (grant.bounces, grant.breaker) == (0, "closed")
        assert (await fleet.grant(SENDER)).status is not GrantStatus.PAUSED
        changes = await fleet.events(type="grant.status_changed", limit=100)
        assert all(e.payload["to"] != "paused" for e in changes)
        assert len(peer.received) == 100  # every good message left, none lost
