"""Rules of an application, their recorded evaluations, and the policy version.

A rule row holds its conditions as JSON, lists by id (references, never
copies). ``policy_versions`` holds one counter per application that every
change of a list or a rule bumps in its own transaction
(:func:`bump_version`); on PostgreSQL the bump also notifies the channel
:data:`CHANNEL` with the application id, delivered at commit, so that each
worker's cache (``runtime/policy.py``) reloads at once rather than at its
next version check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..model.errors import InvalidInput, ListNotFound, RuleNotFound
from ..model.rules import Condition, Rule, RuleEvaluation, RuleSpec
from .dialect import insert
from .events import record
from .scope import Tx
from .tables import (
    grants_table,
    lists_table,
    messages_table,
    new_id,
    policy_versions_table,
    rule_evaluations_table,
    rules_table,
    utcnow,
    workspaces_table,
)
from .timestamps import aware
from .workspaces import get_workspace

__all__ = [
    "CHANNEL",
    "NewEvaluation",
    "StoredMail",
    "all_rules",
    "bump_version",
    "check_spec",
    "create_rule",
    "delete_rule",
    "evaluations",
    "get_rule",
    "grant_workspaces",
    "list_rules",
    "policy_version",
    "recent_messages",
    "record_evaluations",
    "rules_referring",
    "update_rule",
]

CHANNEL = "mailfleet_policy"
"""The PostgreSQL NOTIFY channel of policy changes; the payload is the application id."""

_rules = rules_table
_versions = policy_versions_table
_evaluations = rule_evaluations_table
_lists = lists_table
_messages = messages_table


@dataclass(frozen=True, slots=True)
class NewEvaluation:
    """A match to record: which grant, which rule, what it did, on what."""

    grant_id: str
    rule_id: str
    rule: str
    action: str
    trigger: str
    message_ref: str | None
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredMail:
    """What a dry run reads of a stored message."""

    id: str
    grant_id: str
    grant_address: str
    workspace_id: str
    direction: str
    sender: str | None
    recipients: tuple[str, ...]
    subject: str | None
    authentication: dict[str, Any] | None
    created_at: Any


# -- the version -------------------------------------------------------------------------


def bump_version(tx: Tx) -> int:
    """Count one change of the application's lists or rules; the new version.

    On PostgreSQL, ``NOTIFY mailfleet_policy, '<application id>'`` is sent at commit.
    """
    statement = insert(tx.conn, _versions).values(application_id=tx.application_id, version=1)
    statement = statement.on_conflict_do_update(
        index_elements=["application_id"], set_={"version": _versions.c.version + 1}
    )
    tx.conn.execute(statement)
    if tx.conn.dialect.name == "postgresql":
        tx.conn.execute(sa.select(sa.func.pg_notify(CHANNEL, tx.application_id)))
    return policy_version(tx)


def policy_version(tx: Tx) -> int:
    """The application's policy version (0 before its first list or rule)."""
    found = tx.conn.execute(
        sa.select(_versions.c.version).where(_versions.c.application_id == tx.application_id)
    ).scalar()
    return int(found or 0)


# -- rules -------------------------------------------------------------------------------


def _conditions(raw: Iterable[dict[str, Any]]) -> tuple[Condition, ...]:
    return tuple(
        Condition(
            c["field"],
            c["operator"],
            tuple(c["value"]) if isinstance(c["value"], list) else c["value"],
        )
        for c in raw
    )


def _rule(row: sa.Row[Any]) -> Rule:
    return Rule(
        id=row.id,
        name=row.name,
        trigger=row.trigger,
        action=row.action,
        conditions=_conditions(row.conditions),
        match=row.match,
        priority=row.priority,
        folder=row.folder,
        workspace_id=row.workspace_id,
        enabled=row.enabled,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
    )


def check_spec(tx: Tx, spec: RuleSpec) -> str | None:
    """The workspace id the rule attaches to; every list it names must be the
    application's (:class:`ListNotFound` naming the condition)."""
    wanted = spec.list_ids
    if wanted:
        own = {
            row[0]
            for row in tx.conn.execute(
                sa.select(_lists.c.id).where(
                    _lists.c.application_id == tx.application_id, _lists.c.id.in_(wanted)
                )
            )
        }
        for index, condition in enumerate(spec.conditions):
            for list_id in condition.list_ids:
                if list_id not in own:
                    raise ListNotFound(list_id, field=f"conditions[{index}].value")
    if spec.workspace is None:
        return None
    return get_workspace(tx, spec.workspace).id


def _values(spec: RuleSpec, workspace_id: str | None) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "name": spec.name,
        "trigger": spec.trigger,
        "priority": spec.priority,
        "match": spec.match,
        "conditions": [c.as_json() for c in spec.conditions],
        "action": spec.action,
        "folder": spec.folder,
        "enabled": spec.enabled,
    }


def create_rule(tx: Tx, spec: RuleSpec) -> Rule:
    """Store a validated rule (its lists and workspace must be the application's)."""
    workspace_id = check_spec(tx, spec)
    now = utcnow()
    rule_id = new_id()
    tx.conn.execute(
        sa.insert(_rules).values(
            id=rule_id,
            application_id=tx.application_id,
            created_at=now,
            updated_at=now,
            **_values(spec, workspace_id),
        )
    )
    bump_version(tx)
    record(tx, "rule.created", {"rule_id": rule_id, "name": spec.name, "action": spec.action})
    return get_rule(tx, rule_id)


def get_rule(tx: Tx, rule_id: str) -> Rule:
    """A rule of the application; :class:`RuleNotFound` otherwise."""
    row = tx.conn.execute(
        sa.select(_rules).where(
            _rules.c.application_id == tx.application_id, _rules.c.id == rule_id
        )
    ).first()
    if row is None:
        raise RuleNotFound(rule_id)
    return _rule(row)


def update_rule(tx: Tx, rule_id: str, spec: RuleSpec) -> Rule:
    """Replace a rule's definition (its id and creation time stay)."""
    get_rule(tx, rule_id)
    workspace_id = check_spec(tx, spec)
    tx.conn.execute(
        sa.update(_rules)
        .where(_rules.c.application_id == tx.application_id, _rules.c.id == rule_id)
        .values(updated_at=utcnow(), **_values(spec, workspace_id))
    )
    bump_version(tx)
    record(tx, "rule.updated", {"rule_id": rule_id, "name": spec.name, "action": spec.action})
    return get_rule(tx, rule_id)


def delete_rule(tx: Tx, rule_id: str) -> None:
    """Delete a rule (its recorded evaluations stay)."""
    deleted = tx.conn.execute(
        sa.delete(_rules).where(
            _rules.c.application_id == tx.application_id, _rules.c.id == rule_id
        )
    ).rowcount
    if not deleted:
        raise RuleNotFound(rule_id)
    bump_version(tx)
    record(tx, "rule.deleted", {"rule_id": rule_id})


def list_rules(
    tx: Tx,
    *,
    trigger: str | None = None,
    workspace: str | None = None,
    limit: int | None = 100,
    after: str | None = None,
) -> list[Rule]:
    """The application's rules in the order they were made (ids after ``after``);
    ``workspace``: the rules of that workspace only (not the application's)."""
    query = sa.select(_rules).where(_rules.c.application_id == tx.application_id)
    if trigger is not None:
        query = query.where(_rules.c.trigger == trigger)
    if workspace is not None:
        query = query.where(_rules.c.workspace_id == get_workspace(tx, workspace).id)
    if after:
        query = query.where(_rules.c.id > after)
    query = query.order_by(_rules.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [_rule(row) for row in tx.conn.execute(query)]


def all_rules(tx: Tx) -> list[Rule]:
    """Every rule of the application (what the runtime compiles)."""
    return list_rules(tx, limit=None)


def rules_referring(tx: Tx, list_id: str) -> list[str]:
    """The ids of the rules whose conditions name ``list_id``."""
    return [rule.id for rule in all_rules(tx) if list_id in rule.list_ids]


# -- evaluations -------------------------------------------------------------------------


def record_evaluations(tx: Tx, found: Sequence[NewEvaluation]) -> None:
    """Record matches, in the caller's transaction."""
    if not found:
        return
    now = utcnow()
    tx.conn.execute(
        sa.insert(_evaluations),
        [
            {
                "application_id": tx.application_id,
                "grant_id": e.grant_id,
                "rule_id": e.rule_id,
                "rule_name": e.rule[:200],
                "action": e.action,
                "trigger": e.trigger,
                "message_ref": None if e.message_ref is None else e.message_ref[:998],
                "detail": e.detail,
                "created_at": now,
            }
            for e in found
        ],
    )


def evaluations(
    tx: Tx, grant_id: str, *, limit: int | None = 100, after: int | None = None
) -> list[RuleEvaluation]:
    """A grant's recorded matches, oldest first (ids after ``after``)."""
    query = sa.select(_evaluations).where(
        _evaluations.c.application_id == tx.application_id, _evaluations.c.grant_id == grant_id
    )
    if after is not None:
        query = query.where(_evaluations.c.id > after)
    query = query.order_by(_evaluations.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [
        RuleEvaluation(
            id=row.id,
            grant_id=row.grant_id,
            rule_id=row.rule_id,
            rule=row.rule_name,
            action=row.action,
            trigger=row.trigger,
            message_ref=row.message_ref,
            detail=dict(row.detail or {}),
            created_at=aware(row.created_at),
        )
        for row in tx.conn.execute(query)
    ]


# -- what the runtime reads --------------------------------------------------------------


def grant_workspaces(tx: Tx, grant_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each grant's workspace id and address, for grants of the application."""
    wanted = list(set(grant_ids))
    if not wanted:
        return {}
    grants = grants_table
    rows = tx.conn.execute(
        sa.select(grants.c.id, grants.c.workspace_id, grants.c.address).where(
            grants.c.application_id == tx.application_id, grants.c.id.in_(wanted)
        )
    )
    return {row.id: (row.workspace_id, row.address) for row in rows}


def recent_messages(
    tx: Tx,
    *,
    direction: str,
    grant: str | None = None,
    workspace: str | None = None,
    limit: int = 50,
) -> list[StoredMail]:
    """The last ``limit`` stored messages of one grant (id) or of every grant of a
    workspace (name or id), newest first, in ``direction`` (``in`` or ``out``)."""
    if (grant is None) == (workspace is None):
        raise InvalidInput("grant", "give a grant or a workspace, not both")
    grants = grants_table
    query = (
        sa.select(
            _messages.c.id,
            _messages.c.grant_id,
            _messages.c.direction,
            _messages.c.sender,
            _messages.c.recipients,
            _messages.c.subject,
            _messages.c.authentication,
            _messages.c.created_at,
            grants.c.address,
            grants.c.workspace_id,
        )
        .join(grants, grants.c.id == _messages.c.grant_id)
        .where(
            _messages.c.application_id == tx.application_id,
            grants.c.application_id == tx.application_id,
            _messages.c.direction == direction,
        )
    )
    if grant is not None:
        query = query.where(_messages.c.grant_id == grant)
    else:
        assert workspace is not None
        workspace_id = get_workspace(tx, workspace).id
        query = query.where(
            grants.c.workspace_id == workspace_id,
            grants.c.workspace_id.in_(
                sa.select(workspaces_table.c.id).where(
                    workspaces_table.c.application_id == tx.application_id
                )
            ),
        )
    query = query.order_by(_messages.c.created_at.desc(), _messages.c.id.desc()).limit(limit)
    return [
        StoredMail(
            id=row.id,
            grant_id=row.grant_id,
            grant_address=row.address,
            workspace_id=row.workspace_id,
            direction=row.direction,
            sender=row.sender,
            recipients=tuple(row.recipients or ()),
            subject=row.subject,
            authentication=row.authentication,
            created_at=aware(row.created_at),
        )
        for row in tx.conn.execute(query)
    ]
