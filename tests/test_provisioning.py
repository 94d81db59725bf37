"""One-call and bulk provisioning against both real database backends."""

from __future__ import annotations

import anyio
import pytest

from mailfleet import (
    Agent,
    DomainNotRegistered,
    Fleet,
    InvalidAddress,
    InvalidAgent,
    InvalidInput,
    ProvisionOutcome,
    WorkspaceNotFound,
)

pytestmark = pytest.mark.anyio


async def _counts(fleet: Fleet) -> tuple[int, int]:
    return await fleet.count_grants(), len(await fleet.events(limit=100_000))


async def test_provision_returns_a_complete_identity(fleet: Fleet) -> None:
    grant = await fleet.provision("Agent-1@Example.com", metadata={"team": "blue"})
    assert grant.address == "agent-1@example.com"
    assert grant.workspace == "default"
    assert grant.status == "active"
    assert grant.metadata == {"team": "blue"}
    assert grant.policy == (await fleet.workspace("default")).policy
    (event,) = await fleet.events(type="grant.created")
    assert event.grant_id == grant.id
    assert event.payload["address"] == "agent-1@example.com"


async def test_provisioning_twice_yields_one_grant(fleet: Fleet) -> None:
    first = await fleet.provision("agent@example.com")
    again = await fleet.provision("AGENT@example.com")
    assert again.id == first.id
    results = await fleet.provision_many(["agent@example.com", "agent@example.com"])
    assert [r.outcome for r in results] == [ProvisionOutcome.EXISTING] * 2
    assert await fleet.count_grants() == 1
    assert len(await fleet.events(type="grant.created")) == 1


async def test_concurrent_provisioning_in_one_fleet(fleet: Fleet) -> None:
    ids: list[str] = []

    async def provision() -> None:
        ids.append((await fleet.provision("race@example.com")).id)

    async with anyio.create_task_group() as tg:
        for _ in range(25):
            tg.start_soon(provision)
    assert len(set(ids)) == 1
    assert len(await fleet.events(type="grant.created")) == 1


async def test_concurrent_single_provisions_each_get_their_own_answer(fleet: Fleet) -> None:
    """Single provisions that arrive together share a transaction, and answer as if one
    after the other: one `created` per address, an unknown workspace refusing its own."""
    await fleet.create_workspace("team")
    outcomes: dict[str, list[ProvisionOutcome]] = {"race": [], "team": [], "lost": []}
    refused: list[Exception] = []

    async def provision(kind: str, address: str, workspace: str | None) -> None:
        try:
            (result,) = await fleet.provision_many([address], workspace=workspace)
        except WorkspaceNotFound as exc:
            refused.append(exc)
            return
        outcomes[kind].append(result.outcome)

    async with anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(provision, "race", "race@example.com", None)
            tg.start_soon(provision, "team", f"t{n}@example.com", "team")
            tg.start_soon(provision, "lost", f"l{n}@example.com", "gone")
            tg.start_soon(provision, "lost", f"x{n}@unregistered.example", "team")
    assert sorted(outcomes["race"]) == [ProvisionOutcome.CREATED] + [ProvisionOutcome.EXISTING] * 9
    assert outcomes["team"] == [ProvisionOutcome.CREATED] * 10
    assert outcomes["lost"] == [ProvisionOutcome.INVALID] * 10  # the unregistered domain
    assert len(refused) == 10  # the unknown workspace
    assert {g.workspace for g in await fleet.grants(limit=None) if g.address[0] == "t"} == {"team"}
    assert await fleet.count_grants() == 11


async def test_concurrent_provisioning_from_separate_fleets(database_url: str) -> None:
    """Two fleets, two engines, two connection pools: the database arbitrates."""
    addresses = [f"agent{i}@example.com" for i in range(300)]
    async with (
        Fleet(database_url=database_url, application="test") as one,
        Fleet(database_url=database_url, application="test") as two,
    ):
        await one.add_domain("example.com")
        outcomes: list[list[ProvisionOutcome]] = []

        async def provision(fleet: Fleet, chunk: list[str]) -> None:
            results = await fleet.provision_many(chunk)
            outcomes.append([r.outcome for r in results])

        async with anyio.create_task_group() as tg:
            for fleet in (one, two):
                for start in range(0, 300, 50):
                    # overlapping slices: each address is asked for by several callers
                    tg.start_soon(provision, fleet, addresses[start : start + 100])
                    tg.start_soon(provision, fleet, list(reversed(addresses[start : start + 75])))
        created = sum(o.count(ProvisionOutcome.CREATED) for o in outcomes)
        assert created == 300
        assert await one.count_grants() == 300
        assert len(await two.events(type="grant.created", limit=1000)) == 300
        grants = await one.grants(limit=None)
        assert sorted(g.address for g in grants) == sorted(addresses)


async def test_batch_reports_each_address(fleet: Fleet) -> None:
    await fleet.provision("old@example.com")
    given = [
        "new@example.com",
        "not-an-address",
        "old@example.com",
        "someone@unregistered.org",
        "New@Example.com",
        "",
    ]
    results = await fleet.provision_many(given)
    assert [r.address for r in results] == given
    assert [r.outcome for r in results] == [
        ProvisionOutcome.CREATED,
        ProvisionOutcome.INVALID,
        ProvisionOutcome.EXISTING,
        ProvisionOutcome.INVALID,
        ProvisionOutcome.CREATED,  # the same new grant, reported for both spellings
        ProvisionOutcome.INVALID,
    ]
    assert results[0].grant is not None
    assert results[4].grant is not None
    assert results[0].grant.id == results[4].grant.id
    assert isinstance(results[1].error, InvalidAddress)
    assert "@-sign" in (results[1].reason or "")
    assert isinstance(results[3].error, DomainNotRegistered)
    assert "unregistered.org" in (results[3].reason or "")
    assert not results[5].ok
    assert await fleet.count_grants() == 2


async def test_bulk_provisioning_spans_batches(database_url: str) -> None:
    async with Fleet(
        database_url=database_url, application="test", provision_batch_size=64
    ) as fleet:
        await fleet.add_domain("example.com")
        seen: list[int] = []
        addresses = [f"bulk{i}@example.com" for i in range(1000)] + ["bad", "bulk0@example.com"]

        def progress(done: int, total: int) -> None:
            assert total == 1000
            seen.append(done)

        results = await fleet.provision_many(addresses, progress=progress)
        assert all(r.outcome is ProvisionOutcome.CREATED for r in results[:1000])
        assert seen == sorted(seen)
        assert seen[-1] == 1000
        assert len(seen) == 16
        assert await fleet.count_grants() == 1000


@pytest.mark.parametrize(
    ("address", "kwargs", "error", "field"),
    [
        ("not an address", {}, InvalidAddress, "address"),
        ("a@nowhere.org", {}, DomainNotRegistered, "address"),
        ("a@example.com", {"workspace": "missing"}, WorkspaceNotFound, "workspace"),
        ("a@example.com", {"metadata": {"when": object()}}, InvalidInput, "metadata"),
        ("a@example.com", {"agent": 42}, InvalidInput, "agent"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    fleet: Fleet, address: str, kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    before = await _counts(fleet)
    with pytest.raises(error) as caught:
        await fleet.provision(address, **kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field  # type: ignore[attr-defined]
    assert await _counts(fleet) == before


async def test_unknown_workspace_in_bulk_writes_nothing(fleet: Fleet) -> None:
    before = await _counts(fleet)
    with pytest.raises(WorkspaceNotFound):
        await fleet.provision_many(["a@example.com", "b@example.com"], workspace="nope")
    assert await _counts(fleet) == before


async def test_deprovision_tears_down_and_records(fleet: Fleet) -> None:
    grant = await fleet.provision("leaving@example.com")
    assert await fleet.deprovision("leaving@example.com") is True
    assert await fleet.deprovision(grant.id) is False
    (event,) = await fleet.events(type="grant.deleted")
    assert event.grant_id == grant.id
    assert event.payload["status"] == "deleted"
    assert await fleet.count_grants() == 0
    fresh = await fleet.provision("leaving@example.com")
    assert fresh.id != grant.id


async def test_bulk_deprovision(fleet: Fleet) -> None:
    await fleet.provision_many([f"t{i}@example.com" for i in range(50)])
    removed = await fleet.deprovision_many([f"t{i}@example.com" for i in range(0, 50, 2)])
    assert len(removed) == 25
    assert await fleet.count_grants() == 25


async def test_register_provisions_what_an_agent_declares(database_url: str) -> None:
    class Desk(Agent):
        addresses = ("desk@support.example.net", "desk2@support.example.net")

    async with Fleet(database_url=database_url, application="test") as fleet:
        grants = await fleet.register(Desk)
        assert [g.address for g in grants] == list(Desk.addresses)
        assert {g.agent for g in grants} == {Desk.agent_name()}
        assert [d.name for d in await fleet.domains()] == ["support.example.net"]
        assert [g.id for g in await fleet.register(Desk)] == [g.id for g in grants]


def test_agent_declarations_fail_at_class_creation() -> None:
    with pytest.raises(InvalidAddress, match=r"Broken\.addresses\[1\]"):

        class Broken(Agent):
            addresses = ("fine@example.com", "not-an-address")

    with pytest.raises(InvalidAgent, match="list of addresses"):

        class Single(Agent):
            addresses = "one@example.com"  # type: ignore[assignment]
