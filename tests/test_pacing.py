"""Quotas, rates, pacing, warm-up and the order of the outbound gates, through a fleet:
what ``send`` answers, what the outbox holds, and what a real relay peer receives. Two
processes sending for one grant on PostgreSQL share its quota exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from itertools import pairwise
from typing import Any

import anyio
import pytest

from mailfleet import Fleet, GrantStatus
from mailfleet.model.outbound import OutgoingMail, SendStatus
from mailfleet.store.scope import Tx
from relay import relay_peer
from sending import SENDER, fleet_sending

pytestmark = pytest.mark.anyio

DAY = 86_400
OPEN = {"warmup": {"grant": [], "domain": []}, "breaker": {"enabled": False}}


async def quiet_fleet(database_url: str, policy: dict[str, Any]) -> Fleet:
    fleet = Fleet(database_url=database_url, application="test")
    await fleet.__aenter__()
    await fleet.add_domain("example.com")
    await fleet.create_workspace("outreach", policy={**OPEN, **policy})
    await fleet.provision(SENDER, workspace="outreach")
    return fleet


async def send(fleet: Fleet, to: str = "someone@example.org", **options: Any) -> Any:
    return await fleet.send(SENDER, to, subject="Offer", text="Hello.", **options)


async def test_a_burst_is_queued_and_sent_as_the_rate_allows(database_url: str) -> None:
    # one per 0.5 s: slow enough that five sends queued one after another, even on a
    # loaded machine, come faster than the bucket refills
    policy = {**OPEN, "send_rate_per_minute": 120, "send_burst": 2}
    async with relay_peer() as peer, fleet_sending(database_url, peer, policy=policy) as fleet:
        before = time.time()
        results = [await send(fleet, f"r{n}@example.org") for n in range(5)]
        assert all(r.status is SendStatus.QUEUED for r in results)
        assert [r.send_at for r in results[:2]] == [None, None]  # the burst leaves at once
        scheduled = [r.send_at for r in results[2:]]
        assert all(s is not None for s in scheduled)
        gaps = [b - a for a, b in pairwise(s for s in scheduled if s is not None)]
        assert gaps == [pytest.approx(0.5, abs=0.05)] * 2
        assert all("scheduled" in (r.detail or "") for r in results[2:])
        with anyio.fail_after(10):
            while len(peer.received) < 5:  # noqa: ASYNC110 - polling the peer
                await anyio.sleep(0.02)
        assert time.time() - before >= 1.4  # three of them waited for the rate


async def test_past_the_queue_bound_a_send_is_rate_limited_and_nothing_is_queued(
    database_url: str,
) -> None:
    fleet = await quiet_fleet(
        database_url, {"send_rate_per_minute": 60, "send_burst": 2, "send_queue_limit": 1}
    )
    try:
        results = [await send(fleet, f"r{n}@example.org") for n in range(4)]
        assert [r.status for r in results] == [SendStatus.QUEUED] * 3 + [SendStatus.RATE_LIMITED]
        limited = results[-1]
        assert limited.retry_after == pytest.approx(1.0, abs=0.2)  # when the first waiting leaves
        assert limited.message_id is None
        assert "1 sends already wait" in (limited.detail or "")
        assert len(await fleet.outbox(limit=100)) == 3
    finally:
        await fleet.__aexit__(None, None, None)


async def test_the_daily_quota_answers_rate_limited_until_midnight_or_defers(
    database_url: str,
) -> None:
    fleet = await quiet_fleet(database_url, {"daily_send_quota": 3, "quota_pacing_from": 1.0})
    try:
        for n in range(3):
            assert (await send(fleet, f"r{n}@example.org")).ok
        limited = await send(fleet, "r3@example.org")
        now = time.time()
        midnight = (now // DAY + 1) * DAY
        assert limited.status is SendStatus.RATE_LIMITED
        assert limited.retry_after == pytest.approx(midnight - now, abs=2)
        deferred = await send(fleet, "r3@example.org", defer=True)
        assert deferred.status is SendStatus.QUEUED
        assert deferred.send_at == pytest.approx(midnight)
        assert (deferred.detail or "").startswith("deferred")
        assert len(await fleet.outbox(limit=100)) == 4
    finally:
        await fleet.__aexit__(None, None, None)


async def test_near_the_quota_sends_are_spread_over_the_rest_of_the_day(
    database_url: str,
) -> None:
    fleet = await quiet_fleet(
        database_url,
        {"daily_send_quota": 10, "quota_pacing_from": 0.5, "send_burst": 10},
    )
    try:
        first = [await send(fleet, f"r{n}@example.org") for n in range(5)]
        assert all(r.ok and r.send_at is None for r in first)
        paced = [await send(fleet, f"p{n}@example.org") for n in range(5)]
        assert all(r.ok for r in paced)
        times = [r.send_at or time.time() for r in paced]
        left = (time.time() // DAY + 1) * DAY - time.time()
        gaps = [b - a for a, b in pairwise(times)]
        assert all(gap == pytest.approx(left / 5, rel=0.1) for gap in gaps[1:])
        assert max(times) < time.time() + left  # the whole quota within the day
    finally:
        await fleet.__aexit__(None, None, None)


async def test_a_new_grant_follows_its_warm_up_ramp(database_url: str) -> None:
    ramp = {"grant": [{"within": 3_600, "recipients": 2}], "domain": []}
    fleet = await quiet_fleet(database_url, {"warmup": ramp})
    try:
        assert (await send(fleet, "a@example.org")).ok
        assert (await send(fleet, "b@example.org")).ok
        refused = await send(fleet, "c@example.org")
        assert refused.status is SendStatus.RATE_LIMITED
        assert refused.retry_after == pytest.approx(3_600, abs=5)
        assert "at most 2 distinct recipients in its first hour" in (refused.detail or "")
        assert (await send(fleet, "A@example.org")).ok  # mailed before: not new
        later = await send(fleet, "c@example.org", defer=True)
        assert later.ok
        assert later.send_at == pytest.approx(time.time() + 3_600, abs=5)
    finally:
        await fleet.__aexit__(None, None, None)


async def test_a_new_domain_follows_its_own_ramp_across_its_grants(database_url: str) -> None:
    ramp = {"grant": [], "domain": [{"within": 86_400, "recipients": 3}]}
    fleet = await quiet_fleet(database_url, {"warmup": ramp})
    try:
        await fleet.provision("other@example.com", workspace="outreach")
        assert (await send(fleet, "a@example.org")).ok
        assert (await fleet.send("other@example.com", "b@example.org", subject="s", text="t")).ok
        assert (await fleet.send("other@example.com", "a@example.org", subject="s", text="t")).ok
        assert (await send(fleet, "c@example.org")).ok
        refused = await fleet.send("other@example.com", "d@example.org", subject="s", text="t")
        assert refused.status is SendStatus.RATE_LIMITED
        assert "new domain (example.com)" in (refused.detail or "")
    finally:
        await fleet.__aexit__(None, None, None)


async def test_the_gates_answer_in_their_documented_order(database_url: str) -> None:
    fleet = await quiet_fleet(database_url, {"daily_send_quota": 1, "quota_pacing_from": 1.0})
    try:
        blocked: list[OutgoingMail] = []

        def no_offers(tx: Tx, mail: OutgoingMail) -> str | None:
            assert tx.application_id  # the rule runs in the queuing transaction
            blocked.append(mail)
            return "no offers to example.net" if mail.recipients[0].endswith(".net") else None

        fleet.add_outbound_rule(no_offers)
        await fleet.suppress("listed@example.net", reason="manual")
        # suppression (4) before rules (5)
        assert (await send(fleet, "listed@example.net")).status is SendStatus.SUPPRESSED
        # rules (5) before quota and rate (6): the quota is not touched
        ruled = await send(fleet, "x@example.net")
        assert ruled.status is SendStatus.BLOCKED_BY_RULE
        assert ruled.detail == "blocked_by_rule: no offers to example.net"
        assert (blocked[-1].sender, blocked[-1].subject) == (SENDER, "Offer")
        assert (await send(fleet, "y@example.org")).ok  # the one send of the quota
        assert (await send(fleet, "z@example.org")).status is SendStatus.RATE_LIMITED
        # restriction (2) before recipient (3); status (1) before restriction (2)
        await fleet.restrict("example.com", kind="domain", reason="abuse", by="ops")
        restricted = await send(fleet, "not an address")
        assert restricted.status is SendStatus.RESTRICTED
        assert restricted.detail == "domain_restricted: abuse"
        await fleet.set_grant_status(SENDER, GrantStatus.PAUSED)
        assert (await send(fleet, "not an address")).status is SendStatus.PAUSED
        await fleet.set_grant_status(SENDER, GrantStatus.ACTIVE)
        await fleet.lift("example.com", kind="domain", reason="resolved", by="ops")
        assert (await send(fleet, "not an address")).status is SendStatus.INVALID_RECIPIENT
    finally:
        await fleet.__aexit__(None, None, None)


# -- two processes on PostgreSQL ------------------------------------------------------------

SENDING_PROCESS = """
import anyio, json, sys
from mailfleet import Fleet

async def main(url, port, count):
    async with Fleet(
        database_url=url, application="test", smtp_port=None, poll_interval=0.02,
        relay_host="127.0.0.1", relay_port=port, relay_starttls=False,
    ) as fleet:
        async with anyio.create_task_group() as tg:
            await tg.start(fleet.serve)
            answers = []
            for n in range(count):
                result = await fleet.send(
                    "sales@example.com", f"r{n}@example.org", subject="Offer", text="Hello."
                )
                answers.append(result.status.value)
            while any(o.status == "pending" for o in await fleet.outbox(limit=1000)):
                await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        print(json.dumps(answers))

anyio.run(main, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
"""


@pytest.mark.postgres
async def test_two_processes_sending_for_one_grant_share_its_quota_and_count_bounces_once(
    postgres_url: str,
) -> None:
    policy = {"daily_send_quota": 50, "quota_pacing_from": 1.0, "send_burst": 1_000}
    fleet = await quiet_fleet(postgres_url, policy)
    await fleet.__aexit__(None, None, None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    async with relay_peer() as peer:
        gone = [f"r{n}@example.org" for n in range(0, 40, 4)]
        for address in gone:
            peer.rcpt_replies[address] = f"550 5.1.1 <{address}>: user unknown"

        def run_both() -> list[list[str]]:
            processes = [
                subprocess.Popen(
                    [sys.executable, "-c", SENDING_PROCESS, postgres_url, str(peer.port), "40"],
                    stdout=subprocess.PIPE,
                    env=env,
                    text=True,
                )
                for _ in range(2)
            ]
            return [json.loads(p.communicate(timeout=120)[0]) for p in processes]

        answers = await anyio.to_thread.run_sync(run_both)
    flat = [status for one in answers for status in one]
    assert flat.count("queued") == 50  # exactly the quota, across both
    assert set(flat) <= {"queued", "rate_limited", "suppressed"}  # a bounced address is listed
    queued_gone = sum(
        1
        for one in answers
        for n, status in enumerate(one)
        if status == "queued" and f"r{n}@example.org" in gone
    )
    async with Fleet(database_url=postgres_url, application="test") as reopened:
        listed = await reopened.outbox(limit=1_000)
        assert len(listed) == 50
        assert sum(o.status == "bounced" for o in listed) == queued_gone
        grant = {lv.kind: lv for lv in await reopened.reputation(SENDER)}["grant"]
        assert (grant.sample, grant.bounces) == (50, queued_gone)  # each send, each bounce once
    assert len(peer.received) == 50 - queued_gone  # each message sent once
