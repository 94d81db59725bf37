"""Policy as code against the store: the current state as a document, and a document
applied in one transaction.

:class:`PolicyCode` is the fleet's (``fleet.export_policy``,
``fleet.apply_policy``). An apply reads the current state, computes the
difference (:func:`~mailfleet.model.policy_document.plan`) and makes every
change in the same write transaction, in the order that keeps references
valid: workspaces (patterns that move between workspaces are released
first, so two workspaces may swap them), lists and their entries, rules
(their lists and workspace resolved by name, to those of the file or
already stored), then, with ``prune``, the rules, lists and workspaces the
file lacks. Any refusal on the way (a rule naming an unknown list, a
pattern another workspace keeps, a pruned workspace that still holds
grants) rolls everything back: nothing is applied. The changes are the
same as those the store functions make one by one (their events, the
policy version bumped, so every worker reloads the rules within a second).

Resources the file does not name are left alone unless ``prune``; the
default workspace is never deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from ..model.errors import Conflict, ListNotFound, MailfleetError, WorkspaceNotFound
from ..model.policy import Policy
from ..model.policy_document import (
    Change,
    InvalidDocument,
    ListDocument,
    PolicyDocument,
    RuleDocument,
    WorkspaceDocument,
    parse_document,
    plan,
    policy_delta,
    rule_document,
)
from ..model.rules import Condition, RuleSpec
from ..store import lists as store_lists
from ..store import rules as store_rules
from ..store import workspaces
from ..store.scope import Scope, Tx
from .policy import PolicyRules

__all__ = ["PolicyCode", "current_document"]

log = logging.getLogger("mailfleet.policy")

P = ParamSpec("P")
T = TypeVar("T")


class PolicyCode:
    """Export the application's workspaces, lists and rules as a document; apply one."""

    def __init__(self, scope: Scope, rules: PolicyRules) -> None:
        self._scope = scope
        self._rules = rules

    async def export_policy(self) -> PolicyDocument:
        """The application's workspaces, lists (with every entry) and rules, as the
        document :meth:`apply_policy` reads (applying it changes nothing)."""
        return await self._scope.read(current_document)

    async def apply_policy(
        self,
        document: PolicyDocument | Mapping[str, Any],
        *,
        prune: bool = False,
        dry_run: bool = False,
    ) -> list[Change]:
        """Make the store what ``document`` declares, in one transaction; the changes
        made (none: it was so already). ``dry_run``: the changes only, nothing made.
        ``prune``: delete the rules, lists and workspaces (but the default) the document
        does not name. A document that is not valid is an
        :class:`~mailfleet.model.policy_document.InvalidDocument` naming the path of
        the field; any refusal while applying leaves the store as it was."""
        wanted = parse_document(
            document.as_json() if isinstance(document, PolicyDocument) else document
        )
        if dry_run:
            return await self._scope.read(
                lambda tx: plan(current_document(tx), wanted, prune=prune)
            )

        def work(tx: Tx) -> list[Change]:
            changes = plan(current_document(tx), wanted, prune=prune)
            if changes:
                _apply(tx, wanted, changes)
            return changes

        changes = await self._scope.write(work)
        if changes:
            await self._rules.refresh()
        log.info(
            "policy document applied: %s",
            f"{len(changes)} changes" if changes else "no changes",
            extra={"changes": len(changes), "prune": prune},
        )
        return changes


def current_document(tx: Tx) -> PolicyDocument:
    """The application's state as a document (names for ids, policies as their
    differences from the defaults, entries and patterns sorted)."""
    found = workspaces.list_workspaces(tx)
    names = {w.id: w.name for w in found}
    docs = [
        WorkspaceDocument(name=w.name, policy=policy_delta(w.policy), patterns=sorted(w.patterns))
        for w in found
    ]
    stored_lists = store_lists.list_lists(tx, limit=None)
    list_names = {x.id: x.name for x in stored_lists}
    lists = [
        ListDocument(
            name=x.name,
            type=x.type,
            entries=sorted(store_lists.list_entries(tx, x.id, limit=None)),
        )
        for x in stored_lists
    ]
    rules: list[RuleDocument] = []
    seen: dict[str, str] = {}
    for rule in store_rules.all_rules(tx):
        if rule.name in seen:
            raise Conflict(
                "rules",
                f"two rules are named {rule.name!r} ({seen[rule.name]}, {rule.id}): policy "
                "as code knows rules by name; rename or delete one first",
            )
        seen[rule.name] = rule.id
        spec = rule.spec()
        conditions = tuple(
            Condition(c.field, c.operator, tuple(list_names.get(i, i) for i in c.list_ids))
            if c.operator == "in_list"
            else c
            for c in spec.conditions
        )
        workspace = None if rule.workspace_id is None else names.get(rule.workspace_id)
        rules.append(
            rule_document(
                RuleSpec(
                    name=spec.name,
                    trigger=spec.trigger,
                    action=spec.action,
                    conditions=conditions,
                    match=spec.match,
                    priority=spec.priority,
                    folder=spec.folder,
                    workspace=workspace,
                    enabled=spec.enabled,
                )
            )
        )
    return PolicyDocument(workspaces=docs, lists=lists, rules=rules)


def _apply(tx: Tx, wanted: PolicyDocument, changes: list[Change]) -> None:
    """Every change, in the caller's transaction (a refusal rolls back them all)."""
    ws_index = {w.name: i for i, w in enumerate(wanted.workspaces)}
    list_index = {x.name: i for i, x in enumerate(wanted.lists)}
    rule_index = {r.name: i for i, r in enumerate(wanted.rules)}
    by_kind: dict[str, list[Change]] = {"workspace": [], "list": [], "rule": []}
    for change in changes:
        by_kind[change.kind].append(change)

    # Workspaces: patterns that move are released first, then each gets its own.
    current = {w.name: w for w in workspaces.list_workspaces(tx)}
    moving = [c for c in by_kind["workspace"] if c.act in ("update", "delete")]
    for change in moving:
        keep: set[str] = set()
        if change.act == "update":
            keep = set(wanted.workspaces[ws_index[change.name]].patterns)
        kept = sorted(set(current[change.name].patterns) & keep)
        _guard(
            f"workspaces[{ws_index.get(change.name, 0)}]",
            workspaces.set_patterns,
            tx,
            change.name,
            kept,
        )
    for change in by_kind["workspace"]:
        if change.act == "delete":
            continue
        where = f"workspaces[{ws_index[change.name]}]"
        ws = wanted.workspaces[ws_index[change.name]]
        full = Policy.parse(ws.policy)
        if change.act == "create":
            _guard(
                where, workspaces.create_workspace, tx, ws.name, policy=full, patterns=ws.patterns
            )
        else:
            _guard(
                where,
                workspaces.update_workspace,
                tx,
                ws.name,
                policy=full.to_json(),
                patterns=ws.patterns,
            )

    # Lists and their entries.
    for change in by_kind["list"]:
        if change.act == "delete":
            continue
        declared = wanted.lists[list_index[change.name]]
        where = f"lists[{list_index[change.name]}]"
        if change.act == "create":
            made = _guard(where, store_lists.create_list, tx, declared.name, declared.type)
            list_id = made.id
        else:
            list_id = store_lists.get_list(tx, declared.name).id
        if change.added:
            store_lists.add_entries(tx, list_id, list(change.added))
        if change.removed:
            store_lists.remove_entries(tx, list_id, list(change.removed))

    # Rules: lists and workspace by name, to those of the store now (the file's among them).
    list_ids = {x.name: x.id for x in store_lists.list_lists(tx, limit=None)}
    stored_rules = {r.name: r.id for r in store_rules.all_rules(tx)}
    for change in by_kind["rule"]:
        if change.act == "delete":
            continue
        index = rule_index[change.name]
        spec = _resolved(tx, wanted.rules[index], f"rules[{index}]", list_ids)
        if change.act == "create":
            _guard(f"rules[{index}]", store_rules.create_rule, tx, spec)
        else:
            _guard(f"rules[{index}]", store_rules.update_rule, tx, stored_rules[change.name], spec)

    # Pruning: rules, then lists, then workspaces.
    for change in by_kind["rule"]:
        if change.act == "delete":
            store_rules.delete_rule(tx, stored_rules[change.name])
    for change in by_kind["list"]:
        if change.act == "delete":
            list_id = list_ids[change.name]
            users = store_rules.rules_referring(tx, list_id)
            if users:
                raise Conflict(
                    "lists",
                    f"the list {change.name!r} is pruned but rules still refer to it: "
                    f"{', '.join(users)}",
                )
            store_lists.delete_list(tx, list_id)
    for change in by_kind["workspace"]:
        if change.act == "delete":
            workspaces.delete_workspace(tx, change.name)


def _resolved(tx: Tx, rule: RuleDocument, where: str, list_ids: Mapping[str, str]) -> RuleSpec:
    """The rule with its lists and workspace by id; unknown names refused at their path."""
    conditions: list[Condition] = []
    for index, c in enumerate(rule.conditions):
        if c.operator != "in_list":
            conditions.append(Condition(c.field, c.operator, c.value))  # type: ignore[arg-type]
            continue
        names = [c.value] if isinstance(c.value, str) else c.value
        ids: list[str] = []
        for name in names:
            if name not in list_ids:
                raise ListNotFound(name, field=f"{where}.conditions[{index}].value")
            ids.append(list_ids[name])
        conditions.append(Condition(c.field, "in_list", tuple(ids)))  # type: ignore[arg-type]
    workspace_id = None
    if rule.workspace is not None:
        try:
            workspace_id = workspaces.get_workspace(tx, rule.workspace).id
        except WorkspaceNotFound:
            raise WorkspaceNotFound(rule.workspace, field=f"{where}.workspace") from None
    return RuleSpec(
        name=rule.name,
        trigger=rule.trigger,  # type: ignore[arg-type]
        action=rule.action,  # type: ignore[arg-type]
        conditions=tuple(conditions),
        match=rule.match,  # type: ignore[arg-type]
        priority=rule.priority,
        folder=rule.folder,
        workspace=workspace_id,
        enabled=rule.enabled,
    )


def _guard(where: str, work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run one store call; a refusal that names a field is re-raised with the field
    prefixed by ``where``, its place in the document."""
    try:
        return work(*args, **kwargs)
    except InvalidDocument:
        raise
    except MailfleetError as exc:
        field = getattr(exc, "field", None)
        if not isinstance(field, str):
            raise
        located = f"{where}.{field}"
        exc.field = located  # type: ignore[attr-defined]
        exc.args = (f"{located}: {getattr(exc, 'message', str(exc))}",)
        raise
