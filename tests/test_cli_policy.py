"""``mailfleet lists ...`` and ``mailfleet rules ...``: the conventions of the CLI (--json,
one error line, exit codes) over both backends."""

from __future__ import annotations

import json
from pathlib import Path

from support import Invoke


def test_lists_from_creation_to_deletion(mailfleet: Invoke, tmp_path: Path) -> None:
    made = mailfleet("lists", "create", "blocked", "--type", "domain", "--json")
    assert made.exit_code == 0, made.output
    list_id = json.loads(made.stdout)["id"]
    entries = tmp_path / "domains.txt"
    entries.write_text("# spammers\nSpam.Example.\nother.example\n\nspam.example\n")
    added = mailfleet("lists", "add", "blocked", "third.example", "--from-file", str(entries))
    assert added.exit_code == 0, added.output
    assert "added 3, exists 0, repeated 1; the list has 3 entries" in added.stdout
    bad = mailfleet("lists", "add", "blocked", "fine.example", "not a domain", "x@y.example")
    assert bad.exit_code == 1
    assert "items[1]: 'not a domain'" in bad.stderr
    assert "items[2]: 'x@y.example'" in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: items[1]")
    shown = json.loads(mailfleet("lists", "show", list_id, "--json").stdout)
    assert shown["entries"] == ["other.example", "spam.example", "third.example"]
    listed = json.loads(mailfleet("lists", "list", "--json").stdout)
    assert [x["name"] for x in listed] == ["blocked"]
    removed = mailfleet("lists", "remove", "blocked", "spam.example", "gone.example")
    assert "removed 1, absent 1" in removed.stdout
    assert mailfleet("lists", "delete", "blocked").exit_code == 0
    missing = mailfleet("lists", "show", "blocked")
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: list: no list 'blocked'")


def test_rules_from_options_or_json_and_the_dry_run(mailfleet: Invoke) -> None:
    mailfleet("lists", "create", "blocked", "--type", "address")
    made = mailfleet(
        "rules",
        "create",
        "--name",
        "blocked senders",
        "--trigger",
        "inbound",
        "--action",
        "block",
        "--when",
        "sender_address in_list blocked",
        "--json",
    )
    assert made.exit_code == 0, made.output
    rule = json.loads(made.stdout)
    assert rule["conditions"][0]["operator"] == "in_list"
    in_use = mailfleet("lists", "delete", "blocked")
    assert in_use.exit_code == 1
    assert "rules still refer to list 'blocked'" in in_use.stderr
    second = mailfleet(
        "rules",
        "create",
        json.dumps(
            {
                "name": "offers",
                "trigger": "inbound",
                "action": "assign_folder",
                "folder": "offers",
                "conditions": [{"field": "subject", "operator": "contains", "value": "offer"}],
            }
        ),
    )
    assert second.exit_code == 0, second.output
    listed = json.loads(mailfleet("rules", "list", "--json").stdout)
    assert [r["name"] for r in listed] == ["blocked senders", "offers"]
    table = mailfleet("rules", "list", "--limit", "1")
    assert "next page: --after" in table.stderr
    shown = mailfleet("rules", "show", rule["id"])
    assert "sender_address in_list" in shown.stdout
    invalid = mailfleet(
        "rules",
        "create",
        "--name",
        "x",
        "--trigger",
        "inbound",
        "--action",
        "nap",
        "--when",
        "subject is x",
    )
    assert invalid.exit_code == 1
    assert invalid.stderr.startswith("error: action: must be one of")

    mailfleet("domains", "add", "example.com")
    mailfleet("grants", "provision", "desk@example.com")
    dry = mailfleet(
        "rules",
        "dry-run",
        "--grant",
        "desk@example.com",
        "--action",
        "trash",
        "--when",
        "subject contains x",
        "--json",
    )
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout) == []
    assert mailfleet("rules", "delete", rule["id"]).exit_code == 0
    assert mailfleet("rules", "delete", rule["id"]).exit_code == 1
