"""The list and rule commands: ``mailfleet lists ...`` and ``mailfleet rules ...``.

::

    mailfleet lists create blocked --type domain
    mailfleet lists add blocked spam.example other.example
    mailfleet lists add blocked --from-file domains.txt
    mailfleet rules create --name "no spam.example" --trigger inbound --action block \\
        --when "sender_domain in_list blocked"
    mailfleet rules create '{"name": "...", "trigger": "inbound", ...}'
    mailfleet rules dry-run --grant desk@example.com --action trash --when "subject contains offer"

They keep the conventions of :mod:`mailfleet.cli`, which registers them.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .cli import AsJson, FromFile, Limit, _call, _keys, _Listing, _print_json, _say, _show_page, app
from .model.errors import InvalidInput, InvalidListItems

if TYPE_CHECKING:
    from .model.lists import ListItemsResult, PolicyList
    from .model.rules import Rule
    from .runtime.fleet import Fleet

__all__: list[str] = []

AfterKey = Annotated[
    str | None,
    typer.Option(
        "--after", metavar="ID", help="The next page: the last id shown (the footer says it)."
    ),
]
ListKey = Annotated[str, typer.Argument(metavar="LIST", help="A list id or name.")]
RuleKey = Annotated[str, typer.Argument(metavar="RULE", help="A rule id.")]

# -- lists ---------------------------------------------------------------------------------

lists_app = typer.Typer(
    no_args_is_help=True, help="Lists of addresses, domains or TLDs that rules refer to."
)
app.add_typer(lists_app, name="lists")


def _list_json(found: PolicyList) -> dict[str, Any]:
    return {
        "id": found.id,
        "name": found.name,
        "type": found.type,
        "size": found.size,
        "created_at": found.created_at,
        "updated_at": found.updated_at,
    }


_LISTS: _Listing[PolicyList] = _Listing(
    "lists",
    ("id", "name", "type", "entries", "changed"),
    row=lambda x: (x.id, x.name, x.type, x.size, x.updated_at),
    record=_list_json,
    cursor=lambda x: x.id,
    whole=("id",),
)


async def _count_lists(fleet: Fleet) -> int:
    return len(await fleet.lists(limit=None))


@lists_app.command("create")
def create_list(
    ctx: typer.Context,
    name: str,
    type: Annotated[str, typer.Option("--type", "-t", help="address, domain or tld.")],
    as_json: AsJson = False,
) -> None:
    """Create an empty list."""
    made = _call(ctx, lambda fleet: fleet.create_list(name, type))
    if as_json:
        _print_json(_list_json(made))
    else:
        _say(f"created {made.type} list {made.name!r}: {made.id}")


@lists_app.command("list")
def list_lists(
    ctx: typer.Context, limit: Limit = 100, after: AfterKey = None, as_json: AsJson = False
) -> None:
    """List the application's lists, oldest first."""
    _show_page(
        ctx,
        _LISTS,
        lambda fleet, n: fleet.lists(limit=n, after=after),
        _count_lists,
        limit=limit,
        as_json=as_json,
    )


@lists_app.command("show")
def show_list(
    ctx: typer.Context,
    key: ListKey,
    entries: Annotated[int, typer.Option(min=0, help="Show up to this many entries.")] = 20,
    as_json: AsJson = False,
) -> None:
    """Show a list and its first entries."""

    async def read(fleet: Fleet) -> tuple[PolicyList, list[str]]:
        found = await fleet.get_list(key)
        return found, (await fleet.list_items(found.id, limit=entries) if entries else [])

    found, values = _call(ctx, read)
    if as_json:
        _print_json({**_list_json(found), "entries": values})
        return
    _say(f"{found.name} ({found.type} list {found.id}): {found.size:,} entries")
    for value in values:
        _say(f"  {value}")
    if found.size > len(values) and values:
        _say(f"... and {found.size - len(values):,} more", stderr=True)


@lists_app.command("delete")
def delete_list(ctx: typer.Context, key: ListKey) -> None:
    """Delete a list and its entries (refused while rules refer to it)."""
    _call(ctx, lambda fleet: fleet.delete_list(key))
    _say(f"deleted list {key}")


Values = Annotated[list[str] | None, typer.Argument(metavar="VALUE", help="Entries.")]


@lists_app.command("add")
def add_items(
    ctx: typer.Context,
    key: ListKey,
    values: Values = None,
    from_file: FromFile = None,
    as_json: AsJson = False,
) -> None:
    """Add entries (up to 10,000 a call): normalised, repeats ignored; one invalid entry and
    nothing is added (each invalid one is named on stderr)."""
    items = _keys(values, from_file, what="VALUE")
    result = _items(ctx, lambda fleet: fleet.add_list_items(key, items))
    _report(result, as_json, "added", "exists")


@lists_app.command("remove")
def remove_items(
    ctx: typer.Context,
    key: ListKey,
    values: Values = None,
    from_file: FromFile = None,
    as_json: AsJson = False,
) -> None:
    """Remove entries (up to 10,000 a call); one invalid entry and nothing is removed."""
    items = _keys(values, from_file, what="VALUE")
    result = _items(ctx, lambda fleet: fleet.remove_list_items(key, items))
    _report(result, as_json, "removed", "absent")


def _items(ctx: typer.Context, work: Any) -> ListItemsResult:
    try:
        result: ListItemsResult = _call(ctx, work)
    except InvalidListItems as exc:
        for error in exc.errors[:20]:
            _say(f"{error.field}: {error.value!r}: {error.message}", stderr=True)
        if len(exc.errors) > 20:
            _say(f"... and {len(exc.errors) - 20:,} more invalid entries", stderr=True)
        raise
    return result


def _report(result: ListItemsResult, as_json: bool, done: str, other: str) -> None:
    if as_json:
        _print_json(
            {
                "list_id": result.list_id,
                "size": result.size,
                "items": [
                    {"value": i.value, "normalized": i.normalized, "status": i.status}
                    for i in result.items
                ],
            }
        )
        return
    _say(
        f"{done} {result.count(done):,}, {other} {result.count(other):,}, "  # type: ignore[arg-type]
        f"repeated {result.count('duplicate'):,}; the list has {result.size:,} entries"
    )


# -- rules ---------------------------------------------------------------------------------

rules_app = typer.Typer(
    no_args_is_help=True, help="Rules: conditions on mail and what to do with it."
)
app.add_typer(rules_app, name="rules")


def _rule_json(rule: Rule) -> dict[str, Any]:
    return rule.as_json()


def _condition_text(rule: Rule) -> str:
    joiner = " and " if rule.match == "all" else " or "
    return joiner.join(
        f"{c.field} {c.operator} {','.join(c.value) if isinstance(c.value, tuple) else c.value}"
        for c in rule.conditions
    )


_RULES: _Listing[Rule] = _Listing(
    "rules",
    ("id", "name", "trigger", "priority", "action", "when", "workspace", "enabled"),
    row=lambda r: (
        r.id,
        r.name,
        r.trigger,
        r.priority,
        r.action if r.folder is None else f"{r.action} {r.folder}",
        _condition_text(r),
        r.workspace_id or "(all)",
        r.enabled,
    ),
    record=_rule_json,
    cursor=lambda r: r.id,
    whole=("id",),
    widest={"when": 60},
)

RuleJson = Annotated[
    str | None,
    typer.Argument(
        metavar="RULE_JSON", help="The rule as a JSON object ('@FILE': read it from FILE)."
    ),
]
Name = Annotated[str | None, typer.Option("--name", help="The rule's name.")]
Trigger = Annotated[str | None, typer.Option("--trigger", help="inbound or outbound.")]
Action = Annotated[
    str | None,
    typer.Option("--action", help="block, mark_spam, assign_folder, mark_read, archive or trash."),
]
When = Annotated[
    list[str] | None,
    typer.Option(
        "--when",
        metavar="'FIELD OPERATOR VALUE'",
        help="A condition (repeat for more); in_list takes list ids or names, comma separated.",
    ),
]
Match = Annotated[str | None, typer.Option("--match", help="all (default) or any.")]
Priority = Annotated[int | None, typer.Option("--priority", help="Lower first (default 100).")]
Folder = Annotated[str | None, typer.Option("--folder", help="For assign_folder.")]
Workspace = Annotated[
    str | None,
    typer.Option("--workspace", "-w", help="Attach to this workspace (default: all grants)."),
]


def _rule_arg(raw: str | None) -> dict[str, Any]:
    """The JSON argument as an object (``@FILE``: read from the file), or an empty one."""
    if raw is None:
        return {}
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or exc
            raise InvalidInput("RULE_JSON", f"cannot read {raw[1:]}: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput("RULE_JSON", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("RULE_JSON", "expected a JSON object")
    return data


async def _rule_data(
    fleet: Fleet, data: dict[str, Any], options: dict[str, Any], when: list[str] | None
) -> dict[str, Any]:
    """The rule as a mapping: the JSON argument, then the options over it."""
    merged = {**data, **{k: v for k, v in options.items() if v is not None}}
    if when:
        merged["conditions"] = [await _condition(fleet, text) for text in when]
    return merged


async def _condition(fleet: Fleet, text: str) -> dict[str, Any]:
    parts = shlex.split(text)
    if len(parts) < 3:
        raise InvalidInput("--when", f"{text!r}: expected FIELD OPERATOR VALUE")
    field, operator, value = parts[0], parts[1], " ".join(parts[2:])
    if operator != "in_list":
        return {"field": field, "operator": operator, "value": value}
    ids = [(await fleet.get_list(key.strip())).id for key in value.split(",") if key.strip()]
    return {"field": field, "operator": operator, "value": ids}


@rules_app.command("create")
def create_rule(
    ctx: typer.Context,
    rule: RuleJson = None,
    name: Name = None,
    trigger: Trigger = None,
    action: Action = None,
    when: When = None,
    match: Match = None,
    priority: Priority = None,
    folder: Folder = None,
    workspace: Workspace = None,
    as_json: AsJson = False,
) -> None:
    """Create a rule, from JSON or options; in force on every worker within a second."""
    options = {
        "name": name,
        "trigger": trigger,
        "action": action,
        "match": match,
        "priority": priority,
        "folder": folder,
        "workspace": workspace,
    }

    given = _rule_arg(rule)

    async def create(fleet: Fleet) -> Rule:
        return await fleet.create_rule(await _rule_data(fleet, given, options, when))

    made = _call(ctx, create)
    if as_json:
        _print_json(_rule_json(made))
    else:
        _say(f"created rule {made.name!r}: {made.id}")


@rules_app.command("list")
def list_rules(
    ctx: typer.Context,
    trigger: Trigger = None,
    limit: Limit = 100,
    after: AfterKey = None,
    as_json: AsJson = False,
) -> None:
    """List the application's rules, oldest first."""

    async def count(fleet: Fleet) -> int:
        return len(await fleet.rules(trigger=trigger, limit=None))

    _show_page(
        ctx,
        _RULES,
        lambda fleet, n: fleet.rules(trigger=trigger, limit=n, after=after),
        count,
        limit=limit,
        as_json=as_json,
    )


@rules_app.command("show")
def show_rule(ctx: typer.Context, key: RuleKey, as_json: AsJson = False) -> None:
    """Show one rule."""
    found = _call(ctx, lambda fleet: fleet.rule(key))
    if as_json:
        _print_json(_rule_json(found))
        return
    for label, value in (
        ("id", found.id),
        ("name", found.name),
        ("trigger", found.trigger),
        ("priority", found.priority),
        ("action", found.action if found.folder is None else f"{found.action} {found.folder}"),
        ("when", _condition_text(found)),
        ("workspace", found.workspace_id or "(all grants)"),
        ("enabled", found.enabled),
    ):
        _say(f"{label + ':':<11}{value}")


@rules_app.command("delete")
def delete_rule(ctx: typer.Context, key: RuleKey) -> None:
    """Delete a rule (its recorded evaluations stay)."""
    _call(ctx, lambda fleet: fleet.delete_rule(key))
    _say(f"deleted rule {key}")


@rules_app.command("dry-run")
def dry_run(
    ctx: typer.Context,
    rule: RuleJson = None,
    grant: Annotated[
        str | None, typer.Option("--grant", "-g", help="A grant id or address.")
    ] = None,
    workspace: Workspace = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The last this many messages.")] = 50,
    name: Name = None,
    trigger: Trigger = None,
    action: Action = None,
    when: When = None,
    match: Match = None,
    folder: Folder = None,
    as_json: AsJson = False,
) -> None:
    """What a rule (not saved) would have done to a grant's or a workspace's last messages."""
    options = {
        "name": name or "dry run",
        "trigger": trigger or ("inbound" if rule is None else None),
        "action": action,
        "match": match,
        "folder": folder,
    }

    given = _rule_arg(rule)

    async def run(fleet: Fleet) -> Any:
        data = await _rule_data(fleet, given, options, when)
        return await fleet.dry_run_rule(data, grant=grant, workspace=workspace, limit=limit)

    results = _call(ctx, run)
    if as_json:
        _print_json(
            [
                {
                    "message_id": r.message_id,
                    "grant_id": r.grant_id,
                    "sender": r.sender,
                    "subject": r.subject,
                    "received_at": r.received_at,
                    "matched": r.matched,
                    "outcome": r.outcome,
                }
                for r in results
            ]
        )
        return
    from .cli import _print_table

    _print_table(
        "dry run",
        ("message", "received", "from", "subject", "outcome"),
        ((r.message_id, r.received_at, r.sender, r.subject, r.outcome) for r in results),
        whole=("message",),
        widest={"subject": 50},
    )
    matched = sum(1 for r in results if r.matched)
    _say(f"{matched:,} of {len(results):,} messages matched", stderr=True)
