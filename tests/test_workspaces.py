"""Workspaces: policy by reference, auto-grouping, protection of the default, bulk moves."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from mailfleet import (
    DefaultWorkspaceProtected,
    Fleet,
    GrantNotFound,
    InvalidPattern,
    InvalidPolicy,
    PatternInUse,
    WorkspaceExists,
    WorkspaceNotEmpty,
    WorkspaceNotFound,
)
from mailfleet.store.tables import grants_table

pytestmark = pytest.mark.anyio


async def _snapshot(fleet: Fleet) -> tuple[object, ...]:
    spaces = await fleet.workspaces()
    return (
        [(w.name, w.policy, w.patterns, w.grant_count) for w in spaces],
        await fleet.count_grants(),
        len(await fleet.events(limit=100_000)),
    )


async def test_a_default_workspace_always_exists(fleet: Fleet) -> None:
    (default,) = await fleet.workspaces()
    assert default.name == "default"
    assert default.is_default


async def test_the_default_workspace_cannot_be_deleted(fleet: Fleet) -> None:
    before = await _snapshot(fleet)
    with pytest.raises(DefaultWorkspaceProtected, match="default workspace"):
        await fleet.delete_workspace("default")
    assert await _snapshot(fleet) == before


async def test_create_and_delete_a_workspace(fleet: Fleet) -> None:
    created = await fleet.create_workspace(
        "outreach", policy={"daily_send_quota": 200}, patterns=["*.Example.org"]
    )
    assert created.policy.daily_send_quota == 200
    assert created.patterns == ("*.example.org",)
    with pytest.raises(WorkspaceExists, match="already exists with another policy"):
        await fleet.create_workspace("outreach")
    # Creating it again as it is, or with exist_ok whatever it holds now, returns it.
    again = await fleet.create_workspace(
        "outreach", policy={"daily_send_quota": 200}, patterns=["*.example.org"]
    )
    assert again == created
    await fleet.update_policy("outreach", {"daily_send_quota": 100})
    kept = await fleet.create_workspace("outreach", policy={"daily_send_quota": 200}, exist_ok=True)
    assert (kept.id, kept.policy.daily_send_quota) == (created.id, 100)
    assert len(await fleet.events(type="workspace.created")) == 2  # the default and it
    await fleet.delete_workspace("outreach")
    with pytest.raises(WorkspaceNotFound):
        await fleet.workspace("outreach")


async def test_a_workspace_holding_grants_is_not_deleted(fleet: Fleet) -> None:
    await fleet.create_workspace("busy")
    await fleet.provision("a@example.com", workspace="busy")
    with pytest.raises(WorkspaceNotEmpty, match="1 grants"):
        await fleet.delete_workspace("busy")
    assert (await fleet.grant("a@example.com")).workspace == "busy"


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        ({"daily_send_quota": -5}, "policy.daily_send_quota"),
        ({"inbox_retention_days": 10, "spam_retention_days": 20}, "policy.inbox_retention_days"),
        ({"thresholds": {"complaint_pause": 0.5}}, "policy.thresholds.complaint_pause"),
    ],
)
async def test_bad_policies_write_nothing(
    fleet: Fleet, policy: dict[str, object], field: str
) -> None:
    before = await _snapshot(fleet)
    with pytest.raises(InvalidPolicy) as caught:
        await fleet.create_workspace("strict", policy=policy)
    assert caught.value.field == field
    with pytest.raises(InvalidPolicy) as caught:
        await fleet.update_policy("default", policy)
    assert caught.value.field == field
    assert await _snapshot(fleet) == before


async def test_bad_patterns_and_taken_patterns_write_nothing(fleet: Fleet) -> None:
    await fleet.create_workspace("eu", patterns=["*.eu.example.com"])
    before = await _snapshot(fleet)
    with pytest.raises(InvalidPattern):
        await fleet.create_workspace("bad", patterns=["ok.example.com", "a.*.example.com"])
    with pytest.raises(PatternInUse, match="'eu'"):
        await fleet.create_workspace("copy", patterns=["*.EU.example.com"])
    with pytest.raises(PatternInUse):
        await fleet.set_patterns("default", ["*.eu.example.com"])
    assert await _snapshot(fleet) == before


async def test_auto_group_precedence(fleet: Fleet) -> None:
    for domain in ["sales.eu.example.com", "paris.eu.example.com", "us.example.com"]:
        await fleet.add_domain(domain)
    await fleet.create_workspace("broad", patterns=["*.example.com"])
    await fleet.create_workspace("europe", patterns=["*.eu.example.com"])
    await fleet.create_workspace("sales", patterns=["sales.eu.example.com"])
    await fleet.create_workspace("chosen")

    async def workspace_of(address: str, **kwargs: str) -> str:
        return (await fleet.provision(address, **kwargs)).workspace

    assert await workspace_of("a@sales.eu.example.com") == "sales"  # exact domain
    assert await workspace_of("a@paris.eu.example.com") == "europe"  # longest wildcard
    assert await workspace_of("a@us.example.com") == "broad"
    assert await workspace_of("a@example.com") == "default"  # *.example.com: subdomains only
    assert await workspace_of("b@sales.eu.example.com", workspace="chosen") == "chosen"


async def test_one_policy_update_reaches_ten_thousand_grants(database_url: str) -> None:
    async with Fleet(database_url=database_url, application="test") as fleet:
        await fleet.add_domain("example.com")
        await fleet.create_workspace("fleet")
        addresses = [f"agent{i}@example.com" for i in range(10_000)]
        results = await fleet.provision_many(addresses, workspace="fleet")
        assert all(r.ok for r in results)
        before = await _grant_rows(fleet)

        updated = await fleet.update_policy("fleet", {"daily_send_quota": 42})

        assert updated.policy_version == 2
        grants = await fleet.grants(workspace="fleet", limit=None)
        assert len(grants) == 10_000
        assert {g.policy.daily_send_quota for g in grants} == {42}
        assert (await fleet.grant("agent9999@example.com")).policy.daily_send_quota == 42
        assert await _grant_rows(fleet) == before  # not one grant row was written
        (event,) = await fleet.events(type="workspace.policy_updated")
        assert event.payload["changes"] == {"daily_send_quota": 42}


async def _grant_rows(fleet: Fleet) -> list[tuple[object, ...]]:
    def read(conn: sa.Connection) -> list[tuple[object, ...]]:
        return [tuple(row) for row in conn.execute(sa.select(grants_table).order_by("id"))]

    return await fleet.database.read(read)


async def test_bulk_move_pins_grants(fleet: Fleet) -> None:
    await fleet.create_workspace("triage")
    addresses = [f"m{i}@example.com" for i in range(1500)]
    await fleet.provision_many(addresses)
    moved = await fleet.move_grants(addresses[:1200], "triage")
    assert moved == 1200
    assert await fleet.count_grants(workspace="triage") == 1200
    assert await fleet.count_grants(workspace="default") == 300
    assert await fleet.move_grants(addresses[:10], "triage") == 0  # already there
    events = await fleet.events(type="grant.workspace_changed", limit=5000)
    assert len(events) == 1200
    assert events[0].payload["workspace"] == "triage"

    # pinned grants stay where they were put when patterns change
    await fleet.set_patterns("default", ["example.com"])
    await fleet.create_workspace("catch-all", patterns=["*.example.com"])
    assert await fleet.regroup() == 0
    assert await fleet.count_grants(workspace="triage") == 1200


async def test_bulk_move_refuses_unknown_grants(fleet: Fleet) -> None:
    await fleet.create_workspace("triage")
    await fleet.provision("known@example.com")
    before = await _snapshot(fleet)
    with pytest.raises(GrantNotFound, match=r"ghost@example\.com"):
        await fleet.move_grants(["known@example.com", "ghost@example.com"], "triage")
    with pytest.raises(WorkspaceNotFound):
        await fleet.move_grants(["known@example.com"], "nowhere")
    assert await _snapshot(fleet) == before


async def test_regroup_applies_new_patterns_to_existing_grants(fleet: Fleet) -> None:
    await fleet.add_domain("ops.example.com")
    await fleet.provision_many([f"r{i}@ops.example.com" for i in range(20)])
    await fleet.provision("pinned@ops.example.com", workspace="default")
    await fleet.create_workspace("ops", patterns=["ops.example.com"])
    assert await fleet.count_grants(workspace="ops") == 0  # patterns act on new grants

    assert await fleet.regroup() == 20
    assert await fleet.count_grants(workspace="ops") == 20
    assert (await fleet.grant("pinned@ops.example.com")).workspace == "default"
    assert await fleet.regroup() == 0

    await fleet.set_patterns("ops", [])
    assert await fleet.regroup() == 20
    assert await fleet.count_grants(workspace="ops") == 0
