"""Regrouping at scale: patterns re-applied to existing grants in bounded batches, with
filters (created after, one domain), progress, its job's events and logs; the CLI's
``workspaces regroup`` options; a bulk move of 10,000 grants in one call."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import pytest

from mailfleet import DomainNotRegistered, Fleet, InvalidInput
from support import Invoke, ok, one_error_line

pytestmark = pytest.mark.anyio


async def _three_waves(fleet: Fleet) -> datetime:
    """leads.example.com: 30 old grants, 20 new; cold.example.com: 10 new. The time
    between the old and new ones is returned. Every grant is in the default workspace
    until the patterns of ``leads`` (both domains) are applied."""
    await fleet.add_domain("leads.example.com")
    await fleet.add_domain("cold.example.com")
    await fleet.provision_many([f"old{i}@leads.example.com" for i in range(30)])
    await anyio.sleep(0.01)
    cut = datetime.now(UTC)
    await anyio.sleep(0.01)
    await fleet.provision_many([f"new{i}@leads.example.com" for i in range(20)])
    await fleet.provision_many([f"c{i}@cold.example.com" for i in range(10)])
    await fleet.create_workspace("leads", patterns=["leads.example.com", "cold.example.com"])
    return cut


async def test_filters_batches_progress_and_events(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    cut = await _three_waves(fleet)
    await fleet.move_grants(["new0@leads.example.com"], "default")  # pinned: stays
    seen: list[tuple[int, int]] = []
    with caplog.at_level(logging.INFO, logger="mailfleet.regroup"):
        job = await fleet.regroup_job(
            created_after=cut,
            domain="leads.example.com",
            progress=lambda done, total: seen.append((done, total)),
            batch_size=7,
        )
    assert (job.total, job.done, job.moved) == (19, 19, 19)
    assert job.domain == "leads.example.com"
    assert job.created_after == cut
    assert job.finished_at is not None
    assert seen == [(0, 19), (7, 19), (14, 19), (19, 19)]
    assert await fleet.count_grants(workspace="leads") == 19
    grant = await fleet.grant("new0@leads.example.com")
    assert grant.workspace_id == (await fleet.workspace("default")).id
    assert (await fleet.grant("old0@leads.example.com")).workspace_id == grant.workspace_id

    (started,) = await fleet.events(type="workspace.regroup_started")
    progress = await fleet.events(type="workspace.regroup_progress", limit=None)
    (finished,) = await fleet.events(type="workspace.regroup_finished")
    assert {e.payload["job_id"] for e in (started, *progress, finished)} == {job.id}
    assert started.payload["total"] == 19
    assert started.payload["domain"] == "leads.example.com"
    assert sorted(e.payload["done"] for e in progress) == [7, 14, 19]
    assert (finished.payload["done"], finished.payload["moved"]) == (19, 19)
    assert (
        len(await fleet.events(type="grant.workspace_changed", limit=None)) == 19
    )  # new0 was in default already
    messages = [r.getMessage() for r in caplog.records if r.name == "mailfleet.regroup"]
    assert messages[0].startswith(f"regroup {job.id} started: 19 grants to look at")
    assert "of leads.example.com" in messages[0]
    assert messages[-1] == f"regroup {job.id} finished: 19 grants looked at, 19 moved"

    # The other filters alone; then the rest, as the plain call did before.
    assert await fleet.regroup(domain="Cold.Example.com.") == 10
    assert await fleet.regroup(created_after=cut) == 0
    assert await fleet.regroup() == 30
    assert await fleet.regroup() == 0


async def test_refusals_change_nothing(fleet: Fleet) -> None:
    await _three_waves(fleet)
    with pytest.raises(DomainNotRegistered) as refused:
        await fleet.regroup(domain="nowhere.example")
    assert refused.value.field == "domain"
    with pytest.raises(InvalidInput):
        await fleet.regroup(domain="not a domain@")
    with pytest.raises(InvalidInput):
        await fleet.regroup_job(batch_size=0)
    assert await fleet.count_grants(workspace="leads") == 0
    assert await fleet.events(type="workspace.regroup_started") == []


async def test_batches_are_transactions_of_their_own(fleet: Fleet) -> None:
    """Provisioning goes on while a regroup runs: its commits land between batches."""
    await fleet.add_domain("leads.example.com")
    await fleet.provision_many([f"a{i}@leads.example.com" for i in range(2000)])
    await fleet.create_workspace("leads", patterns=["leads.example.com"])
    done = anyio.Event()
    made = 0

    async def provision_meanwhile() -> None:
        nonlocal made
        while not done.is_set():
            await fleet.provision(f"meanwhile{made}@example.com")
            made += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(provision_meanwhile)
        await anyio.lowlevel.checkpoint()
        job = await fleet.regroup_job(batch_size=100)
        done.set()
    assert job.moved == 2000
    (started,) = await fleet.events(type="workspace.regroup_started")
    (finished,) = await fleet.events(type="workspace.regroup_finished")
    created = await fleet.events(type="grant.created", limit=None)
    between = [e for e in created if int(started.id) < int(e.id) < int(finished.id)]
    assert between, f"no provision committed during the regroup ({made} made)"


async def test_a_bulk_move_of_10000_grants_in_one_call(fleet: Fleet) -> None:
    await fleet.add_domain("many.example.com")
    addresses = [f"agent{i:05}@many.example.com" for i in range(10_000)]
    await fleet.provision_many(addresses)
    await fleet.create_workspace("many")
    # ids and addresses mixed, some named twice, in any case
    ids = [g.id for g in await fleet.grants(limit=5000)]
    keys = ids + [a.upper() for a in addresses[5000:]] + addresses[:10]
    start = time.perf_counter()
    moved = await fleet.move_grants(keys, "many")
    elapsed = time.perf_counter() - start
    assert moved == 10_000
    assert await fleet.count_grants(workspace="many") == 10_000
    assert len(await fleet.events(type="grant.workspace_changed", limit=None)) == 10_000
    assert elapsed < 20, f"{elapsed:.1f} s for 10,000"
    assert await fleet.regroup() == 0  # pinned there
    assert await fleet.move_grants(keys, "many") == 0


def test_the_command_takes_the_filters(mailfleet: Invoke, state) -> None:
    for domain in ("example.com", "example.org"):
        ok(mailfleet("domains", "add", domain))
    ok(mailfleet("grants", "provision", "a@example.com", "b@example.org"))
    cut = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    time.sleep(0.01)
    ok(mailfleet("grants", "provision", "c@example.org", "d@example.com"))
    ok(mailfleet("workspaces", "create", "all", "--pattern", "example.org", "-p", "example.com"))

    assert "moved 1 grant (of 1 looked at)" in ok(
        mailfleet("workspaces", "regroup", "--created-after", cut, "--domain", "example.org")
    )
    assert "moved 2 grants (of 2 looked at)" in ok(
        mailfleet("workspaces", "regroup", "--domain", "example.com")
    )
    assert "moved 1 grant (of 2 looked at)" in ok(
        mailfleet("workspaces", "regroup", "--domain", "example.org")
    )
    assert one_error_line(mailfleet("workspaces", "regroup", "--created-after", "soon")).startswith(
        "error: created-after: 'soon' is not an ISO-8601 time"
    )
    assert one_error_line(
        mailfleet("workspaces", "regroup", "--domain", "nowhere.example")
    ).startswith("error: domain: domain 'nowhere.example' is not registered")
    where = {g.address: g.workspace for g in state(lambda fleet: fleet.grants())}
    assert set(where.values()) == {"all"}
