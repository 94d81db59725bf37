"""Workspaces: a policy and auto-group patterns, shared by reference by their grants."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..model.errors import (
    DefaultWorkspaceProtected,
    InvalidInput,
    PatternInUse,
    WorkspaceExists,
    WorkspaceNotEmpty,
    WorkspaceNotFound,
)
from ..model.grouping import Pattern, PatternTable
from ..model.policy import Policy
from ..model.records import Workspace
from .events import record
from .scope import Tx
from .tables import grants_table, new_id, patterns_table, utcnow, workspaces_table

__all__ = [
    "DEFAULT_WORKSPACE",
    "cached_policy",
    "create_workspace",
    "delete_workspace",
    "ensure_default_workspace",
    "get_workspace",
    "list_workspaces",
    "pattern_table",
    "policy_of",
    "set_patterns",
    "update_policy",
    "update_workspace",
]

DEFAULT_WORKSPACE = "default"

_workspaces = workspaces_table
_patterns = patterns_table
_grants = grants_table

# Parsed policies by (workspace id, version): a policy is validated once per
# change, however many grants are read with it. Versions only grow, so an
# entry is never stale; the cache is trimmed when it grows past its bound.
_POLICY_CACHE: dict[tuple[str, int], Policy] = {}
_POLICY_CACHE_LIMIT = 4096


def cached_policy(workspace_id: str, version: int) -> Policy | None:
    """The parsed policy of that workspace version, if it is in the cache."""
    return _POLICY_CACHE.get((workspace_id, version))


def policy_of(workspace_id: str, version: int, raw: dict[str, Any]) -> Policy:
    """The parsed policy of a workspace row, from the cache when possible."""
    key = (workspace_id, version)
    policy = _POLICY_CACHE.get(key)
    if policy is None:
        if len(_POLICY_CACHE) >= _POLICY_CACHE_LIMIT:
            _POLICY_CACHE.clear()
        policy = _POLICY_CACHE[key] = Policy.parse(raw)
    return policy


def _validate_name(name: str) -> str:
    clean = name.strip() if isinstance(name, str) else ""
    if not clean or len(clean) > 200:
        raise InvalidInput("workspace", "a name of 1 to 200 characters is required", value=name)
    return clean


def _workspace(
    row: sa.Row[tuple[object, ...]], patterns: Sequence[str], count: int | None = None
) -> Workspace:
    return Workspace(
        id=row.id,
        application_id=row.application_id,
        name=row.name,
        is_default=row.is_default,
        policy=policy_of(row.id, row.policy_version, row.policy),
        policy_version=row.policy_version,
        patterns=tuple(sorted(patterns)),
        grant_count=count,
    )


def _patterns_by_workspace(tx: Tx) -> dict[str, list[str]]:
    conn = tx.conn
    found: dict[str, list[str]] = {}
    rows = conn.execute(
        sa.select(_patterns.c.workspace_id, _patterns.c.pattern).where(
            _patterns.c.application_id == tx.application_id
        )
    )
    for row in rows:
        found.setdefault(row.workspace_id, []).append(row.pattern)
    return found


def ensure_default_workspace(tx: Tx) -> None:
    """Create the application's default workspace if it does not exist yet."""
    conn = tx.conn
    exists = conn.execute(
        sa.select(_workspaces.c.id).where(
            _workspaces.c.application_id == tx.application_id, _workspaces.c.is_default
        )
    ).first()
    if exists is None:
        _insert(tx, DEFAULT_WORKSPACE, Policy(), is_default=True)


def _insert(tx: Tx, name: str, policy: Policy, *, is_default: bool) -> str:
    conn = tx.conn
    now = utcnow()
    workspace_id = new_id()
    conn.execute(
        sa.insert(_workspaces),
        {
            "id": workspace_id,
            "application_id": tx.application_id,
            "name": name,
            "is_default": is_default,
            "policy": policy.to_json(),
            "policy_version": 1,
            "created_at": now,
            "updated_at": now,
        },
    )
    record(
        tx,
        "workspace.created",
        {"workspace_id": workspace_id, "workspace": name, "policy": policy.to_json()},
    )
    return workspace_id


def _row(tx: Tx, workspace: str) -> sa.Row[tuple[object, ...]]:
    """A workspace row by name or id."""
    conn = tx.conn
    row = conn.execute(
        sa.select(_workspaces).where(
            _workspaces.c.application_id == tx.application_id,
            sa.or_(_workspaces.c.name == workspace, _workspaces.c.id == workspace),
        )
    ).first()
    if row is None:
        raise WorkspaceNotFound(workspace)
    return row


def get_workspace(tx: Tx, workspace: str) -> Workspace:
    """A workspace by name or id; :class:`WorkspaceNotFound` otherwise."""
    conn = tx.conn
    row = _row(tx, workspace)
    patterns = conn.execute(
        sa.select(_patterns.c.pattern).where(_patterns.c.workspace_id == row.id)
    ).scalars()
    return _workspace(row, list(patterns))


def list_workspaces(tx: Tx) -> list[Workspace]:
    """Every workspace of the application with its grant count, default first."""
    conn = tx.conn
    counts: dict[str, int] = dict(
        conn.execute(
            sa.select(_grants.c.workspace_id, sa.func.count())
            .where(_grants.c.application_id == tx.application_id)
            .group_by(_grants.c.workspace_id)
        ).all()
    )
    patterns = _patterns_by_workspace(tx)
    rows = conn.execute(
        sa.select(_workspaces)
        .where(_workspaces.c.application_id == tx.application_id)
        .order_by(_workspaces.c.is_default.desc(), _workspaces.c.name)
    )
    return [_workspace(row, patterns.get(row.id, []), counts.get(row.id, 0)) for row in rows]


def create_workspace(
    tx: Tx,
    name: str,
    *,
    policy: Policy | dict[str, Any] | None = None,
    patterns: Iterable[str] = (),
    exist_ok: bool = False,
) -> Workspace:
    """Create a workspace, or return the one of that name when it is the same.

    A workspace of that name with the policy and patterns given is returned
    as it is (creating is idempotent); one that differs is a
    :class:`~mailfleet.WorkspaceExists`, unless ``exist_ok``: then the existing
    workspace is returned unchanged (like ``os.makedirs``).
    """
    conn = tx.conn
    clean = _validate_name(name)
    parsed = policy if isinstance(policy, Policy) else Policy.parse(policy)
    listed = list(patterns)
    taken = conn.execute(
        sa.select(_workspaces.c.id).where(
            _workspaces.c.application_id == tx.application_id, _workspaces.c.name == clean
        )
    ).first()
    if taken is not None:
        existing = get_workspace(tx, taken.id)
        same = existing.policy == parsed and sorted(existing.patterns) == _normal_patterns(listed)
        if not (same or exist_ok):
            raise WorkspaceExists(
                "workspace",
                f"a workspace named {clean!r} already exists with another policy or other "
                "patterns (exist_ok=True returns it as it is; update_policy and set_patterns "
                "change it)",
            )
        return existing
    workspace_id = _insert(tx, clean, parsed, is_default=False)
    _replace_patterns(tx, workspace_id, listed)
    return get_workspace(tx, workspace_id)


def update_policy(tx: Tx, workspace: str, changes: dict[str, Any]) -> Workspace:
    """Apply ``changes`` to a workspace's policy: one row written, whatever its size."""
    conn = tx.conn
    row = _row(tx, workspace)
    policy = policy_of(row.id, row.policy_version, row.policy).updated(changes)
    conn.execute(
        sa.update(_workspaces)
        .where(_workspaces.c.id == row.id)
        .values(
            policy=policy.to_json(),
            policy_version=_workspaces.c.policy_version + 1,
            updated_at=utcnow(),
        )
    )
    record(
        tx,
        "workspace.policy_updated",
        {"workspace_id": row.id, "workspace": row.name, "changes": changes},
    )
    return get_workspace(tx, row.id)


def set_patterns(tx: Tx, workspace: str, patterns: Iterable[str]) -> Workspace:
    """Replace a workspace's auto-group patterns (existing grants stay until regrouped)."""
    row = _row(tx, workspace)
    _replace_patterns(tx, row.id, patterns)
    return get_workspace(tx, row.id)


def update_workspace(
    tx: Tx,
    workspace: str,
    *,
    policy: dict[str, Any] | None = None,
    patterns: Iterable[str] | None = None,
) -> Workspace:
    """Apply policy ``changes`` and/or replace the patterns, in the caller's transaction."""
    row = _row(tx, workspace)
    if policy:
        update_policy(tx, row.id, policy)
    if patterns is not None:
        _replace_patterns(tx, row.id, patterns)
    return get_workspace(tx, row.id)


def _replace_patterns(tx: Tx, workspace_id: str, patterns: Iterable[str]) -> None:
    conn = tx.conn
    parsed = _normal_patterns(patterns)
    if parsed:
        owners = conn.execute(
            sa.select(_patterns.c.pattern, _workspaces.c.name)
            .join(_workspaces, _workspaces.c.id == _patterns.c.workspace_id)
            .where(
                _patterns.c.application_id == tx.application_id,
                _patterns.c.pattern.in_(parsed),
                _patterns.c.workspace_id != workspace_id,
            )
        ).first()
        if owners is not None:
            raise PatternInUse(
                "patterns", f"{owners.pattern!r} already routes to workspace {owners.name!r}"
            )
    conn.execute(sa.delete(_patterns).where(_patterns.c.workspace_id == workspace_id))
    if parsed:
        conn.execute(
            sa.insert(_patterns),
            [
                {"application_id": tx.application_id, "pattern": p, "workspace_id": workspace_id}
                for p in parsed
            ],
        )


def _normal_patterns(patterns: Iterable[str]) -> list[str]:
    """Validated patterns in their normal form, sorted, without repeats."""
    return sorted({str(Pattern.parse(raw)) for raw in patterns})


def delete_workspace(tx: Tx, workspace: str) -> None:
    """Delete an empty, non-default workspace."""
    conn = tx.conn
    row = _row(tx, workspace)
    if row.is_default:
        raise DefaultWorkspaceProtected("workspace", "the default workspace cannot be deleted")
    held = conn.execute(
        sa.select(sa.func.count()).where(_grants.c.workspace_id == row.id)
    ).scalar_one()
    if held:
        raise WorkspaceNotEmpty(
            "workspace", f"{row.name!r} still holds {held} grants: move them first"
        )
    conn.execute(sa.delete(_workspaces).where(_workspaces.c.id == row.id))
    record(tx, "workspace.deleted", {"workspace_id": row.id, "workspace": row.name})


def pattern_table(tx: Tx) -> PatternTable:
    """The application's auto-group patterns, ready to resolve domains."""
    conn = tx.conn
    rows = conn.execute(
        sa.select(_patterns.c.pattern, _patterns.c.workspace_id).where(
            _patterns.c.application_id == tx.application_id
        )
    )
    return PatternTable(rows.all())


def default_workspace_id(tx: Tx) -> str:
    """The id of the application's default workspace."""
    conn = tx.conn
    return str(
        conn.execute(
            sa.select(_workspaces.c.id).where(
                _workspaces.c.application_id == tx.application_id, _workspaces.c.is_default
            )
        ).scalar_one()
    )
