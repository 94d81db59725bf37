"""Policy as code: ``apply`` a YAML document of workspaces, lists and rules in one
transaction, ``export`` the store in the same format (they round-trip), dry runs,
idempotence, refusals naming the path of the faulty field with nothing applied, pruning;
and the ``mailfleet apply`` / ``export`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mailfleet import Fleet, SendStatus, WorkspaceNotEmpty
from mailfleet.model.errors import ListNotFound
from mailfleet.model.policy_document import InvalidDocument, dump_document, load_document
from support import Invoke, ok, one_error_line

pytestmark = pytest.mark.anyio

DOCUMENT = """
version: 1
workspaces:
  - name: default
    policy: {spam_sensitivity: high}
  - name: outreach
    policy:
      daily_send_quota: 200
      thresholds: {bounce_pause: 0.08}
    patterns: ["*.Example.org", leads.example.com]
  - name: triage
lists:
  - name: competitors
    type: domain
    entries: [Rival.Example., other.example]
  - name: vips
    type: address
    entries: [Boss@Example.net]
rules:
  - name: not to rivals
    trigger: outbound
    priority: 10
    conditions:
      - {field: recipient_domain, operator: in_list, value: [competitors]}
    action: block
    workspace: outreach
  - name: vips first
    trigger: inbound
    conditions:
      - {field: sender_address, operator: in_list, value: vips}
      - {field: subject, operator: contains, value: URGENT}
    match: any
    action: assign_folder
    folder: VIP
"""


async def snapshot(fleet: Fleet) -> dict[str, Any]:
    """What the store holds of workspaces, lists and rules, and its event count."""
    lists = await fleet.lists(limit=None)
    return {
        "workspaces": [(w.name, w.policy, w.patterns) for w in await fleet.workspaces()],
        "lists": [(x.name, x.type, await fleet.list_items(x.id, limit=None)) for x in lists],
        "rules": [r.spec() for r in await fleet.rules(limit=None)],
        "events": await fleet.count_events(),
    }


async def test_apply_then_export_round_trips_and_a_second_apply_changes_nothing(
    fleet: Fleet,
) -> None:
    changes = await fleet.apply_policy(load_document(DOCUMENT))
    assert [str(c).split(":")[0] for c in changes] == [
        "~ workspace default",
        "+ workspace outreach",
        "+ workspace triage",
        "+ list competitors",
        "+ list vips",
        "+ rule not to rivals",
        "+ rule vips first",
    ]
    outreach = await fleet.workspace("outreach")
    assert outreach.policy.daily_send_quota == 200
    assert outreach.policy.thresholds.bounce_pause == 0.08
    assert outreach.patterns == ("*.example.org", "leads.example.com")
    assert (await fleet.workspace("default")).policy.spam_sensitivity.value == "high"
    competitors = await fleet.get_list("competitors")
    assert await fleet.list_items(competitors.id) == ["other.example", "rival.example"]
    rule = next(r for r in await fleet.rules() if r.name == "not to rivals")
    assert rule.conditions[0].value == (competitors.id,)  # by reference, by id
    assert rule.workspace_id == outreach.id

    assert await fleet.apply_policy(load_document(DOCUMENT)) == []  # idempotent
    exported = await fleet.export_policy()
    assert await fleet.apply_policy(exported) == []
    again = load_document(dump_document(exported))
    assert again == exported
    assert again == load_document(DOCUMENT)  # the same, in normal form

    # The rules are in force in this fleet at once.
    await fleet.add_domain("leads.example.com")
    await fleet.provision("sales@leads.example.com")
    sent = await fleet.send("sales@leads.example.com", "ceo@rival.example", subject="x", text="y")
    assert sent.status is SendStatus.BLOCKED_BY_RULE


async def test_export_of_a_store_made_by_hand_applies_as_no_change(fleet: Fleet) -> None:
    await fleet.create_workspace("ops", policy={"send_burst": 3}, patterns=["ops.example.com"])
    blocked = await fleet.create_list("blocked", "tld")
    await fleet.add_list_items(blocked.id, [".ru", "XN--P1AI"])
    await fleet.create_rule(
        {
            "name": "no tlds",
            "trigger": "inbound",
            "action": "block",
            "workspace": "ops",
            "conditions": [{"field": "sender_tld", "operator": "in_list", "value": [blocked.id]}],
        }
    )
    await fleet.create_rule(
        {
            "name": "off",
            "trigger": "inbound",
            "action": "trash",
            "enabled": False,
            "priority": -5,
            "conditions": [{"field": "authentication", "operator": "is", "value": "dmarc=fail"}],
        }
    )
    text = dump_document(await fleet.export_policy())
    data = yaml.safe_load(text)
    assert data["rules"][0]["conditions"][0]["value"] == ["blocked"]  # by name
    assert data["rules"][0]["workspace"] == "ops"
    assert data["workspaces"][1] == {
        "name": "ops",
        "policy": {"send_burst": 3},
        "patterns": ["ops.example.com"],
    }
    before = await snapshot(fleet)
    assert await fleet.apply_policy(load_document(text)) == []
    assert await snapshot(fleet) == before


async def test_a_dry_run_shows_the_changes_and_makes_none(fleet: Fleet) -> None:
    await fleet.apply_policy(load_document(DOCUMENT))
    before = await snapshot(fleet)
    changed = DOCUMENT.replace("daily_send_quota: 200", "daily_send_quota: 50").replace(
        "[Boss@Example.net]", "[boss@example.net, ada@example.org]"
    )
    changes = await fleet.apply_policy(load_document(changed), dry_run=True, prune=True)
    assert [str(c) for c in changes] == [
        "~ workspace outreach: policy.daily_send_quota: 200 -> 50",
        "~ list vips: entries: +1, -0",
    ]
    assert await snapshot(fleet) == before
    assert len(await fleet.apply_policy(load_document(changed))) == 2
    assert (await fleet.workspace("outreach")).policy.daily_send_quota == 50


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (
            ("daily_send_quota: 200", "daily_send_quota: -1"),
            "workspaces[1].policy.daily_send_quota",
        ),
        (
            ("  - name: triage", "  - name: triage\n    policy: {colour: red}"),
            "workspaces[2].policy.colour",
        ),
        (("  - name: triage", "  - name: triage\n    polcy: {}"), "workspaces[2].polcy"),
        (("leads.example.com]", "leads..example.com]"), "workspaces[1].patterns[1]"),
        (("other.example]", "not a domain]"), "lists[0].entries[1]"),
        (("type: address", "type: addresses"), "lists[1].type"),
        (("operator: contains", "operator: like"), "rules[1].conditions[1].operator"),
        (("action: block", "action: mark_spam"), "rules[0].action"),
        (("folder: VIP", "folder: sent"), "rules[1].folder"),
        (("  - name: vips\n", "  - name: competitors\n"), "lists[1].name"),
        (("priority: 10", "priority: ten"), "rules[0].priority"),
        (("version: 1", "version: 2"), "version"),
    ],
)
async def test_an_invalid_document_names_the_path_and_applies_nothing(
    fleet: Fleet, edit: tuple[str, str], field: str
) -> None:
    before = await snapshot(fleet)
    assert edit[0] in DOCUMENT
    with pytest.raises(InvalidDocument) as refused:
        await fleet.apply_policy(yaml.safe_load(DOCUMENT.replace(*edit)))
    assert refused.value.field == field, str(refused.value)
    assert str(refused.value).startswith(f"{field}: ")
    assert await snapshot(fleet) == before


async def test_a_refusal_midway_rolls_the_whole_apply_back(fleet: Fleet) -> None:
    before = await snapshot(fleet)
    unknown = DOCUMENT.replace("value: vips", "value: [vips, nobody]")
    with pytest.raises(ListNotFound) as refused:
        await fleet.apply_policy(load_document(unknown))
    assert refused.value.field == "rules[1].conditions[0].value"
    assert "nobody" in str(refused.value)
    # the workspaces, lists and the first rule were made in the transaction, and undone
    assert await snapshot(fleet) == before
    # a workspace a rule names must exist, in the file or in the store
    elsewhere = DOCUMENT.replace("workspace: outreach", "workspace: nowhere")
    with pytest.raises(Exception, match=r"rules\[0\]\.workspace") as refused_ws:
        await fleet.apply_policy(load_document(elsewhere))
    assert type(refused_ws.value).__name__ == "WorkspaceNotFound"
    assert await snapshot(fleet) == before
    # a list already stored may be named by the file's rules
    await fleet.create_list("nobody", "address")
    assert len(await fleet.apply_policy(load_document(unknown))) == 7


async def test_prune_deletes_what_the_file_does_not_name(fleet: Fleet) -> None:
    await fleet.apply_policy(load_document(DOCUMENT))
    await fleet.create_workspace("extra")
    await fleet.create_list("unused", "domain")
    smaller = load_document(DOCUMENT).model_copy(
        update={"rules": load_document(DOCUMENT).rules[:1]}
    )
    # without --prune: nothing is deleted
    assert await fleet.apply_policy(smaller) == []
    changes = await fleet.apply_policy(smaller, prune=True)
    assert sorted(str(c) for c in changes) == [
        "- list unused",
        "- rule vips first",
        "- workspace extra",
    ]
    assert [x.name for x in await fleet.lists()] == ["competitors", "vips"]
    assert [w.name for w in await fleet.workspaces()] == ["default", "outreach", "triage"]
    assert await fleet.apply_policy(smaller, prune=True) == []
    # a workspace with grants refuses its pruning, and the whole apply with it
    await fleet.provision("agent@example.com", workspace="triage")
    before = await snapshot(fleet)
    without_triage = smaller.model_copy(update={"workspaces": smaller.workspaces[:2]})
    with pytest.raises(WorkspaceNotEmpty):
        await fleet.apply_policy(without_triage, prune=True)
    assert await snapshot(fleet) == before


async def test_two_workspaces_swap_patterns_in_one_apply(fleet: Fleet) -> None:
    await fleet.create_workspace("a", patterns=["a.example.com"])
    await fleet.create_workspace("b", patterns=["b.example.com"])
    document = {
        "workspaces": [
            {"name": "a", "patterns": ["b.example.com"]},
            {"name": "b", "patterns": ["a.example.com"]},
        ]
    }
    assert len(await fleet.apply_policy(document)) == 2
    assert (await fleet.workspace("a")).patterns == ("b.example.com",)
    assert (await fleet.workspace("b")).patterns == ("a.example.com",)
    # a pattern kept by a workspace the file does not name is refused at its path
    taken = {"workspaces": [{"name": "c", "patterns": ["a.example.com"]}]}
    with pytest.raises(Exception, match=r"^workspaces\[0\]\.patterns: ") as refused:
        await fleet.apply_policy(taken)
    assert type(refused.value).__name__ == "PatternInUse"


async def test_an_application_sees_only_its_own(fleet: Fleet, database_url: str) -> None:
    await fleet.apply_policy(load_document(DOCUMENT))
    async with Fleet(database_url=database_url, application="other") as other:
        exported = await other.export_policy()
        assert [w.name for w in exported.workspaces] == ["default"]
        assert exported.lists == []
        assert exported.rules == []
        # their apply of the same file makes their own resources, not a change of ours
        assert len(await other.apply_policy(load_document(DOCUMENT))) == 7
    assert await fleet.apply_policy(load_document(DOCUMENT)) == []


def test_the_commands(mailfleet: Invoke, state: Any, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(DOCUMENT)
    shown = mailfleet("apply", str(policy), "--dry-run")
    assert "+ workspace outreach: policy.daily_send_quota: 200" in ok(shown)
    assert "dry run: 7 changes to make, none made" in shown.stderr
    assert [w.name for w in state(lambda fleet: fleet.workspaces())] == ["default"]

    applied = mailfleet("apply", str(policy))
    assert "+ rule vips first" in ok(applied)
    assert "applied 7 changes" in applied.stderr
    again = mailfleet("apply", str(policy))
    assert ok(again) == ""
    assert "no changes" in again.stderr
    assert ok(mailfleet("apply", str(policy), "--json")) == "[]\n"

    exported = tmp_path / "exported.yaml"
    ok(mailfleet("export", str(exported)))
    assert "no changes" in mailfleet("apply", str(exported)).stderr
    assert load_document(ok(mailfleet("export"))) == load_document(DOCUMENT)

    broken = tmp_path / "broken.yaml"
    broken.write_text(DOCUMENT.replace("daily_send_quota: 200", "daily_send_quota: -1"))
    line = one_error_line(mailfleet("apply", str(broken)))
    assert line.startswith("error: workspaces[1].policy.daily_send_quota: ")
    broken.write_text("workspaces: [name: x\n")
    assert one_error_line(mailfleet("apply", str(broken))).startswith(
        "error: document: not valid YAML: line 2"
    )
    assert one_error_line(mailfleet("apply", str(tmp_path / "missing.yaml"))).startswith(
        "error: file: cannot read"
    )
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("!!python/object/apply:os.system [echo hi]\n")
    assert "not valid YAML" in one_error_line(mailfleet("apply", str(unsafe)))
