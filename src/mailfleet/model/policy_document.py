"""Policy as code: the document ``mailfleet apply`` reads and ``mailfleet export`` writes,
and the difference between two of them. Pure: text in, values out; no store.

A document (YAML, read with ``yaml.safe_load``) declares::

    version: 1
    workspaces:
      - name: outreach
        policy: {daily_send_quota: 200, spam_sensitivity: high}   # unset: the default
        patterns: ["*.example.org"]
    lists:
      - name: competitors
        type: domain                     # address, domain or tld
        entries: [rival.example]
    rules:
      - name: not to rivals
        trigger: outbound
        priority: 10
        match: all
        conditions:
          - {field: recipient_domain, operator: in_list, value: [competitors]}
        action: block
        workspace: outreach              # absent: the whole application

Lists are named in conditions and workspaces in rules **by name**; the apply
resolves them (to lists and workspaces of the file, or already stored).
Everything a resource holds is declared: a policy field left out is its
default, a list's entries are all its entries, a rule is its whole
definition. Resources are identified by name; those the store has and the
file does not are kept, unless the apply prunes them.

:func:`parse_document` validates a document and refuses it with
:class:`InvalidDocument`, whose ``field`` is the path of the faulty field
(``workspaces[2].policy.daily_send_quota``, ``lists[0].entries[3]``,
``rules[1].conditions[0].operator``). :func:`plan` compares a document with
the current state (the same form, as :func:`export` of the store gives it)
and answers the :class:`Change` list that turns one into the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidInput
from .grouping import Pattern
from .lists import ListType, normalize_entry
from .policy import Policy
from .rules import RuleSpec

__all__ = [
    "VERSION",
    "Change",
    "InvalidDocument",
    "ListDocument",
    "PolicyDocument",
    "RuleDocument",
    "WorkspaceDocument",
    "dump_document",
    "load_document",
    "parse_document",
    "plan",
    "policy_delta",
    "rule_document",
]

VERSION = 1
"""The document format's version (``version:`` at the top; 1 when absent)."""


class InvalidDocument(InvalidInput):
    """A policy document that cannot be applied: ``field`` is the path of the faulty
    field (``workspaces[2].policy.daily_send_quota``); nothing was applied."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkspaceDocument(_Strict):
    """A workspace: its name, the policy fields that differ from the defaults, its
    auto-group patterns."""

    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    policy: dict[str, Any] = Field(default_factory=dict)
    patterns: list[str] = Field(default_factory=list)


class ListDocument(_Strict):
    """A list: its name, type and every entry."""

    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    type: ListType
    entries: list[str] = Field(default_factory=list)


class ConditionDocument(_Strict):
    """``field operator value``; an ``in_list`` value names lists (one, or several)."""

    field: str
    operator: str
    value: str | list[str]


class RuleDocument(_Strict):
    """A rule, its lists and workspace by name."""

    name: str = Field(min_length=1, max_length=200, pattern=r"\S")
    trigger: str
    priority: int = 100
    match: str = "all"
    conditions: list[ConditionDocument]
    action: str
    folder: str | None = None
    workspace: str | None = None
    enabled: bool = True


class PolicyDocument(_Strict):
    """A whole document: workspaces, lists and rules, each unique by name."""

    version: Literal[1] = 1
    workspaces: list[WorkspaceDocument] = Field(default_factory=list)
    lists: list[ListDocument] = Field(default_factory=list)
    rules: list[RuleDocument] = Field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The document as plain values, in the order :func:`dump_document` writes."""
        return {
            "version": self.version,
            "workspaces": [
                {"name": w.name, "policy": w.policy, "patterns": w.patterns}
                for w in self.workspaces
            ],
            "lists": [{"name": x.name, "type": x.type, "entries": x.entries} for x in self.lists],
            "rules": [_rule_json(r) for r in self.rules],
        }


def _rule_json(rule: RuleDocument) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": rule.name,
        "trigger": rule.trigger,
        "priority": rule.priority,
        "match": rule.match,
        "conditions": [c.model_dump() for c in rule.conditions],
        "action": rule.action,
    }
    if rule.folder is not None:
        data["folder"] = rule.folder
    if rule.workspace is not None:
        data["workspace"] = rule.workspace
    if not rule.enabled:
        data["enabled"] = False
    return data


# -- reading -----------------------------------------------------------------------------


def parse_document(data: object) -> PolicyDocument:
    """Validate a document (what ``yaml.safe_load`` gave) into its normal form: names
    stripped, policies checked and reduced to the fields that differ from the
    defaults, patterns and entries normalised and sorted, rules checked as
    :class:`~mailfleet.model.rules.RuleSpec` checks them. :class:`InvalidDocument`
    names the path of the first faulty field."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InvalidDocument("document", "expected a mapping of workspaces, lists and rules")
    try:
        raw = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidDocument(_path(first["loc"]), message, value=first.get("input")) from None
    workspaces = [_workspace(w, f"workspaces[{i}]") for i, w in enumerate(raw.workspaces)]
    lists = [_list(x, f"lists[{i}]") for i, x in enumerate(raw.lists)]
    rules = [_rule(r, f"rules[{i}]") for i, r in enumerate(raw.rules)]
    for section, items in (("workspaces", workspaces), ("lists", lists), ("rules", rules)):
        _unique(section, [item.name for item in items])
    return PolicyDocument(workspaces=workspaces, lists=lists, rules=rules)


def _path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("str", "list[str]"):  # the branch of a union pydantic names
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "document"


def _unique(section: str, names: Sequence[str]) -> None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise InvalidDocument(
                f"{section}[{index}].name",
                f"{name!r} is declared twice (also {section}[{seen[name]}])",
                value=name,
            )
        seen[name] = index


def _workspace(doc: WorkspaceDocument, where: str) -> WorkspaceDocument:
    try:
        policy = Policy.parse(doc.policy)
    except InvalidInput as exc:
        raise InvalidDocument(f"{where}.{exc.field}", exc.message, value=exc.value) from None
    patterns: set[str] = set()
    for index, raw in enumerate(doc.patterns):
        try:
            patterns.add(str(Pattern.parse(raw)))
        except InvalidInput as exc:
            raise InvalidDocument(f"{where}.patterns[{index}]", exc.message, value=raw) from None
    return WorkspaceDocument(
        name=doc.name.strip(), policy=policy_delta(policy), patterns=sorted(patterns)
    )


def _list(doc: ListDocument, where: str) -> ListDocument:
    entries: set[str] = set()
    for index, raw in enumerate(doc.entries):
        try:
            entries.add(normalize_entry(doc.type, raw, field=f"{where}.entries[{index}]"))
        except InvalidInput as exc:
            raise InvalidDocument(exc.field, exc.message, value=raw) from None
    return ListDocument(name=doc.name.strip(), type=doc.type, entries=sorted(entries))


def _rule(doc: RuleDocument, where: str) -> RuleDocument:
    data = doc.model_dump()
    data["conditions"] = [c.model_dump() for c in doc.conditions]
    try:
        spec = RuleSpec.parse(data)
    except InvalidInput as exc:
        raise InvalidDocument(f"{where}.{exc.field}", exc.message, value=exc.value) from None
    return rule_document(spec)


def rule_document(spec: RuleSpec) -> RuleDocument:
    """A rule as the document holds it (its ``in_list`` values and workspace are names
    in a document, ids in a stored rule's spec: the caller maps them)."""
    return RuleDocument(
        name=spec.name,
        trigger=spec.trigger,
        priority=spec.priority,
        match=spec.match,
        conditions=[ConditionDocument(**c.as_json()) for c in spec.conditions],
        action=spec.action,
        folder=spec.folder,
        workspace=spec.workspace,
        enabled=spec.enabled,
    )


def policy_delta(policy: Policy) -> dict[str, Any]:
    """The fields of ``policy`` that differ from the defaults (a group's own fields
    only): what a document writes, and all it needs."""
    mine, default = policy.to_json(), Policy().to_json()
    delta: dict[str, Any] = {}
    for key, value in mine.items():
        if isinstance(value, dict) and isinstance(default.get(key), dict):
            inner = {k: v for k, v in value.items() if default[key].get(k) != v}
            if inner:
                delta[key] = inner
        elif default.get(key) != value:
            delta[key] = value
    return delta


def load_document(text: str) -> PolicyDocument:
    """A YAML document (``yaml.safe_load``: plain values only) validated by
    :func:`parse_document`; YAML that does not parse is an :class:`InvalidDocument`
    naming the line."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InvalidDocument("document", f"not valid YAML: {where}{problem}") from None
    return parse_document(data)


def dump_document(document: PolicyDocument) -> str:
    """The document as YAML (what :func:`parse_document` reads back as it is)."""
    import yaml

    header = "# mailfleet policy document: `mailfleet apply FILE` applies it\n"
    body: str = yaml.safe_dump(
        document.as_json(), sort_keys=False, allow_unicode=True, default_flow_style=False
    )
    return header + body


# -- the difference ----------------------------------------------------------------------

Kind = Literal["workspace", "list", "rule"]
Act = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One resource to create, update or delete, and what differs (``details``: one
    line each, e.g. ``policy.daily_send_quota: 100 -> 200``, ``entries: +3, -1``)."""

    kind: Kind
    name: str
    act: Act
    details: tuple[str, ...] = ()
    added: tuple[str, ...] = field(default=(), repr=False)
    """For a list: the entries to add."""
    removed: tuple[str, ...] = field(default=(), repr=False)
    """For a list: the entries to remove."""

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.act]
        head = f"{sign} {self.kind} {self.name}"
        return head if not self.details else f"{head}: {'; '.join(self.details)}"

    def as_json(self) -> dict[str, Any]:
        """The change as JSON (``kind``, ``name``, ``act``, ``details``)."""
        return {"kind": self.kind, "name": self.name, "act": self.act, "details": self.details}


def plan(current: PolicyDocument, wanted: PolicyDocument, *, prune: bool = False) -> list[Change]:
    """The changes that turn ``current`` into ``wanted`` (both in normal form): in
    order, workspaces, lists, then rules created or updated, then (with ``prune``)
    rules, lists and workspaces of ``current`` that ``wanted`` lacks deleted (the
    default workspace never). Empty when they are the same."""
    changes: list[Change] = []
    have_ws = {w.name: w for w in current.workspaces}
    for ws in wanted.workspaces:
        old = have_ws.get(ws.name)
        if old is None:
            changes.append(Change("workspace", ws.name, "create", _created_ws(ws)))
        else:
            details = _dict_diff("policy", old.policy, ws.policy)
            if old.patterns != ws.patterns:
                details.append(f"patterns: {old.patterns} -> {ws.patterns}")
            if details:
                changes.append(Change("workspace", ws.name, "update", tuple(details)))
    have_lists = {x.name: x for x in current.lists}
    for wanted_list in wanted.lists:
        found = have_lists.get(wanted_list.name)
        if found is None:
            changes.append(
                Change(
                    "list",
                    wanted_list.name,
                    "create",
                    (f"type {wanted_list.type}", f"entries: +{len(wanted_list.entries)}"),
                    added=tuple(wanted_list.entries),
                )
            )
            continue
        if found.type != wanted_list.type:
            raise InvalidDocument(
                f"lists[{wanted.lists.index(wanted_list)}].type",
                f"the list {wanted_list.name!r} exists with the type {found.type}; a list's "
                "type cannot change (delete it first, or give the new one another name)",
                value=wanted_list.type,
            )
        old_entries, new_entries = set(found.entries), set(wanted_list.entries)
        added = tuple(sorted(new_entries - old_entries))
        removed = tuple(sorted(old_entries - new_entries))
        if added or removed:
            changes.append(
                Change(
                    "list",
                    wanted_list.name,
                    "update",
                    (f"entries: +{len(added)}, -{len(removed)}",),
                    added=added,
                    removed=removed,
                )
            )
    have_rules = {r.name: r for r in current.rules}
    for rule in wanted.rules:
        before = have_rules.get(rule.name)
        if before is None:
            changes.append(Change("rule", rule.name, "create", (f"{rule.trigger} {rule.action}",)))
        elif before != rule:
            details = _dict_diff("", _rule_json(before), _rule_json(rule))
            changes.append(Change("rule", rule.name, "update", tuple(details)))
    if prune:
        named_rules = {r.name for r in wanted.rules}
        named_lists = {x.name for x in wanted.lists} | {
            name
            for r in wanted.rules
            for c in r.conditions
            if c.operator == "in_list"
            for name in ([c.value] if isinstance(c.value, str) else c.value)
        }
        named_ws = {w.name for w in wanted.workspaces} | {
            r.workspace for r in wanted.rules if r.workspace is not None
        }
        changes.extend(
            Change("rule", r.name, "delete") for r in current.rules if r.name not in named_rules
        )
        changes.extend(
            Change("list", x.name, "delete") for x in current.lists if x.name not in named_lists
        )
        changes.extend(
            Change("workspace", w.name, "delete")
            for w in current.workspaces
            if w.name not in named_ws and not _is_default(w)
        )
    return changes


DEFAULT_WORKSPACE = "default"


def _is_default(workspace: WorkspaceDocument) -> bool:
    return workspace.name == DEFAULT_WORKSPACE


def _created_ws(ws: WorkspaceDocument) -> tuple[str, ...]:
    details = [f"policy.{k}: {v}" for k, v in _flat(ws.policy).items()]
    if ws.patterns:
        details.append(f"patterns: {ws.patterns}")
    return tuple(details)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(_flat(value, name))
        else:
            flat[name] = value
    return flat


def _dict_diff(prefix: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for each leaf that differs (``default`` where unset)."""
    before, after = _flat(old, prefix), _flat(new, prefix)
    return [
        f"{key}: {before.get(key, 'default')} -> {after.get(key, 'default')}"
        for key in sorted(set(before) | set(after), key=lambda k: (k not in after, k))
        if before.get(key) != after.get(key)
    ]
