"""Reputation through the runtime: sends to a real relay peer, refusals and late DSNs over the
MX, the grant's state following its rates, pauses as a whole, and reinstatement."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mailers import dsn, mail_to_mx
from mailfleet import Fleet, GrantStatus, InvalidInput, ReputationState
from mailfleet.model.outbound import SendStatus
from mailfleet.store import reputation
from relay import relay_peer
from sending import FREE, SENDER, fleet_sending, levels, refuse, send_to

pytestmark = pytest.mark.anyio


async def test_a_refusal_at_the_pause_threshold_pauses_the_grant(database_url: str) -> None:
    async with relay_peer() as peer, fleet_sending(database_url, peer) as fleet:
        refuse(peer, *(f"gone{n}@example.org" for n in range(3)))
        await send_to(fleet, peer, [f"ok{n}@example.org" for n in range(9)])
        await send_to(fleet, peer, ["gone0@example.org"])
        grant = await fleet.grant(SENDER)
        assert grant.status.value == "paused"  # 1 of 10 sends: 10 %, the pause threshold
        found = await levels(fleet)
        assert (found["grant"].sample, found["grant"].bounces) == (10, 1)
        assert found["grant"].state is ReputationState.PAUSED
        assert "pause threshold" in found["grant"].reason
        (changed,) = await fleet.events(type="grant.status_changed")
        assert (changed.payload["from"], changed.payload["to"]) == ("active", "paused")
        assert changed.payload["sample"] == 10
        refused = await fleet.send(SENDER, "x@example.org", subject="Hi", text="?")
        assert refused.status is SendStatus.PAUSED


async def test_the_minimum_sample_and_review_below_pause(database_url: str) -> None:
    policy = {"reputation_window": 100, "reputation_min_sample": 20, **FREE}
    async with relay_peer() as peer, fleet_sending(database_url, peer, policy=policy) as fleet:
        refuse(peer, "gone@example.org")
        await send_to(fleet, peer, ["gone@example.org"] + [f"ok{n}@example.org" for n in range(18)])
        assert (await fleet.grant(SENDER)).status.value == "active"  # 19 sends: too few to judge
        assert "fewer than the 20 needed" in (await levels(fleet))["grant"].reason
        await send_to(fleet, peer, ["ok19@example.org"])  # 1 of 20: 5 %, review
        assert (await fleet.grant(SENDER)).status.value == "under_review"
        assert (await fleet.send(SENDER, "more@example.org", subject="a", text="b")).ok


async def test_a_late_dsn_counts_for_its_send_and_a_pause_waits_for_reinstatement(
    database_url: str,
) -> None:
    async with relay_peer() as peer, fleet_sending(database_url, peer) as fleet:
        await send_to(fleet, peer, ["late@example.org"])
        first = peer.received[0]
        await send_to(fleet, peer, [f"ok{n}@example.org" for n in range(9)])
        assert (await levels(fleet))["grant"].bounces == 0
        (sent,) = [
            o for o in await fleet.outbox(limit=100) if o.recipients == ("late@example.org",)
        ]
        shown = await fleet.outbox_message(sent.id)
        assert shown is not None
        assert shown.raw is not None
        message_id = next(
            line.split(":", 1)[1].strip()
            for line in shown.raw.decode().splitlines()
            if line.lower().startswith("message-id:")
        )
        report = dsn(
            first.mail_from,
            "late@example.org",
            message_id,
            status="5.1.1",
            diagnostic="550 5.1.1 user unknown",
        )
        assert (await mail_to_mx(fleet, "", first.mail_from, report)).startswith("250")
        with anyio.fail_after(20):
            while (await fleet.grant(SENDER)).status.value != "paused":  # noqa: ASYNC110
                await anyio.sleep(0.02)
        assert (await levels(fleet))["grant"].bounces == 1  # the late DSN, for its send

        await send_to_paused(fleet)
        await fleet.reinstate(SENDER, reason="list cleaned", by="ops@example.com")
        assert (await fleet.grant(SENDER)).status.value == "active"
        after = (await levels(fleet))["grant"]
        assert (after.sample, after.bounces, after.state) == (0, 0, ReputationState.HEALTHY)
        (event,) = await fleet.events(type="grant.reinstated")
        assert (event.payload["by"], event.payload["reason"]) == ("ops@example.com", "list cleaned")
        # The workspace holds only this grant: its rates paused it too, as a whole.
        still = await fleet.send(SENDER, "again@example.org", subject="a", text="b")
        assert still.status is SendStatus.PAUSED
        assert (still.detail or "").startswith("workspace_paused")
        await fleet.reinstate("outreach", kind="workspace", reason="list cleaned", by="ops")
        assert (await fleet.send(SENDER, "again@example.org", subject="a", text="b")).ok


async def send_to_paused(fleet: Fleet) -> None:
    """A paused grant stays paused, whatever else happens, until reinstated."""
    for _ in range(3):
        result = await fleet.send(SENDER, "x@example.org", subject="Hi", text="?")
        assert result.status is SendStatus.PAUSED
    assert (await fleet.grant(SENDER)).status.value == "paused"


async def test_a_workspace_paused_as_a_whole_stops_all_its_grants(database_url: str) -> None:
    async with relay_peer() as peer, fleet_sending(database_url, peer) as fleet:
        await fleet.provision("other@example.com", workspace="outreach")
        refuse(peer, "gone@example.org", "gone2@example.org")
        # Each grant sends 9, too few to be judged alone (10); together, the last two
        # refusals make 2 of 18: 11 %, over the workspace's pause threshold.
        await send_to(fleet, peer, [f"a{n}@example.org" for n in range(9)])
        await send_to(
            fleet,
            peer,
            [f"b{n}@example.org" for n in range(7)] + ["gone@example.org", "gone2@example.org"],
            sender="other@example.com",
        )
        found = await levels(fleet)
        assert (found["grant"].sample, found["grant"].state) == (9, ReputationState.HEALTHY)
        assert (found["workspace"].sample, found["workspace"].bounces) == (18, 2)
        assert (await levels(fleet, "other@example.com"))["grant"].bounces == 2
        assert found["workspace"].state is ReputationState.PAUSED
        assert (await fleet.grant("other@example.com")).status.value == "active"
        paused = await fleet.send("other@example.com", "x@example.org", subject="a", text="b")
        assert paused.status is SendStatus.PAUSED
        assert paused.detail is not None
        assert paused.detail.startswith("workspace_paused")
        moves = sorted(await fleet.events(type="workspace.status_changed"), key=lambda e: e.id)
        # healthy -> (under review at 1 of 17, when the two refusals land apart) -> paused
        steps = [(e.payload["from"], e.payload["to"]) for e in moves]
        assert steps in (
            [("healthy", "paused")],
            [("healthy", "under_review"), ("under_review", "paused")],
        )
        assert moves[-1].payload["bounce_rate"] == 2 / 18
        workspace = await fleet.workspace("outreach")
        await fleet.reinstate("outreach", kind="workspace", reason="fixed", by="ops")
        assert (await levels(fleet))["workspace"].state is ReputationState.HEALTHY
        assert workspace.id == found["workspace"].subject


async def test_reinstate_says_who_and_why(database_url: str) -> None:
    async with Fleet(database_url=database_url) as fleet:
        await fleet.add_domain("example.com")
        await fleet.provision(SENDER)
        with pytest.raises(InvalidInput, match="reason"):
            await fleet.reinstate(SENDER, reason=" ", by="ops")
        with pytest.raises(InvalidInput, match="kind"):
            await fleet.reinstate(SENDER, reason="x", by="ops", kind="planet")


async def test_two_workers_counting_at_once_lose_nothing(database_url: str) -> None:
    """Many concurrent transactions, from two fleets, on the same windows: every send and
    every bounce counted exactly once (rows locked in one order, no deadlock)."""
    async with (
        Fleet(database_url=database_url) as first,
        Fleet(database_url=database_url) as second,
    ):
        await first.add_domain("example.com")
        await first.provision(SENDER)
        grant = await first.grant(SENDER)
        application = first.application.id

        async def count(fleet: Fleet, worker: int) -> None:
            scope = fleet._open("test").scope
            for n in range(25):
                sends = [(worker * 1000 + n, grant.id, f"r{i}@example.org") for i in range(4)]
                await scope.write(lambda tx, sends=sends: reputation.record_sends(tx, sends))

        async with anyio.create_task_group() as tg:
            for worker, fleet in enumerate((first, second, first, second)):
                tg.start_soon(count, fleet, worker)
        found = await levels(first)
        # The default workspace's window (1,000) holds all 400: none lost, none twice.
        assert {kind: level.sample for kind, level in found.items()} == {
            "grant": 400,
            "workspace": 400,
            "domain": 400,
            "application": 400,
        }
        assert found["application"].subject == application


def test_grants_show_gives_each_level(mailfleet: Any, state: Any) -> None:
    async def setup(fleet: Fleet) -> None:
        await fleet.add_domain("example.com")
        await fleet.provision(SENDER)

    state(setup)
    shown = mailfleet("grants", "show", SENDER)
    assert shown.exit_code == 0, shown.output
    assert f"{SENDER} (" in shown.output
    assert ": active, workspace default" in shown.output
    for level in ("grant", "workspace", "domain", "application"):
        assert level in shown.output
    import json

    data = json.loads(mailfleet("grants", "show", SENDER, "--json").stdout)
    assert data["address"] == SENDER
    assert [level["kind"] for level in data["reputation"]] == [
        "grant",
        "workspace",
        "domain",
        "application",
    ]
    assert data["reputation"][0]["state"] == "healthy"
    missing = mailfleet("grants", "show", "nobody@example.com")
    assert missing.exit_code == 1


async def test_the_rates_never_move_a_grant_an_operator_paused(database_url: str) -> None:
    async with relay_peer() as peer, fleet_sending(database_url, peer) as fleet:
        await send_to(fleet, peer, [f"ok{n}@example.org" for n in range(19)])
        first = peer.received[0]
        await fleet.set_grant_status(SENDER, GrantStatus.PAUSED)  # an operator's pause
        report = dsn(
            first.mail_from,
            first.rcpt_tos[0],
            "<unknown@example.com>",
            status="5.1.1",
            diagnostic="550 5.1.1 user unknown",
        )
        assert (await mail_to_mx(fleet, "", first.mail_from, report)).startswith("250")
        with anyio.fail_after(20):
            while (await levels(fleet))["grant"].bounces != 1:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        found = await levels(fleet)
        assert found["grant"].state is ReputationState.UNDER_REVIEW  # 1 of 19 by the rates
        assert (await fleet.grant(SENDER)).status is GrantStatus.PAUSED  # still the operator's
