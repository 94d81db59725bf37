"""Grants: one row per mailbox identity, pointing at its workspace.

Provisioning is written for batches: a batch of any size costs a handful of
statements (look up domains, insert-or-ignore the grants, read back the ids,
append the events), so a single ``provision`` and a bulk ``provision_many``
share one path. Idempotency rests on the unique address: concurrent
provisioning of one address, from any number of processes, yields one grant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..model.addresses import Address
from ..model.errors import Conflict, DomainNotRegistered, GrantNotFound
from ..model.policy import Policy
from ..model.records import Grant, GrantStatus
from .dialect import insert
from .domains import domain_ids
from .events import record_many
from .prepared import Prepared
from .scope import Tx
from .tables import grants_table, new_id, utcnow, workspaces_table
from .timestamps import aware
from .workspaces import (
    cached_policy,
    default_workspace_id,
    get_workspace,
    pattern_table,
    policy_of,
)

__all__ = [
    "GrantRequest",
    "RegroupBatch",
    "count_by_status",
    "count_grants",
    "count_regroup",
    "delete_grants",
    "get_grant",
    "get_grants",
    "grant_ids",
    "grant_rows",
    "list_grants",
    "move_grants",
    "provision_batch",
    "regroup",
    "regroup_batch",
    "set_status",
    "statuses",
]

_grants = grants_table
_workspaces = workspaces_table


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """One address to provision, already validated."""

    address: Address
    agent: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _insert_ignoring_duplicates(conn: Connection) -> Any:
    return insert(conn, _grants).on_conflict_do_nothing(index_elements=["address"])


def provision_batch(
    tx: Tx,
    requests: Sequence[GrantRequest],
    *,
    workspace: str | None = None,
) -> tuple[dict[str, tuple[Grant, bool]], dict[str, Exception]]:
    """Create the grants that do not exist yet, with their ``grant.created`` events.

    Returns ``(found, refused)``: by address, the grant and whether this call
    created it; and the refused addresses with why.
    """
    conn = tx.conn
    explicit = get_workspace(tx, workspace).id if workspace else None
    domains = domain_ids(tx, (r.address.domain for r in requests))
    refused: dict[str, Exception] = {}
    accepted: list[GrantRequest] = []
    for request in requests:
        if request.address.domain in domains:
            accepted.append(request)
        else:
            refused[str(request.address)] = DomainNotRegistered(request.address.domain)
    if not accepted:
        return {}, refused

    routes = pattern_table(tx) if explicit is None else None
    fallback = default_workspace_id(tx)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    # Sorted, so that concurrent batches lock index entries in the same order.
    for request in sorted(accepted, key=lambda r: str(r.address)):
        domain = request.address.domain
        target = explicit or (routes.resolve(domain) if routes else None) or fallback
        rows.append(
            {
                "id": new_id(),
                "application_id": tx.application_id,
                "workspace_id": target,
                "domain_id": domains[domain],
                "address": str(request.address),
                "agent": request.agent,
                "status": GrantStatus.ACTIVE.value,
                "workspace_pinned": explicit is not None,
                "metadata": request.metadata,
                "created_at": now,
                "updated_at": now,
            }
        )
    conn.execute(_insert_ignoring_duplicates(conn), rows)

    # Read back by the unique address alone: an application filter here makes
    # planners scan the application's index, and the batch cost grow with the fleet.
    stored = {
        row.address: row
        for row in conn.execute(
            _select_grants().where(_grants.c.address.in_([row["address"] for row in rows]))
        )
    }
    policies = _policies(tx, stored.values())
    found: dict[str, tuple[Grant, bool]] = {}
    created = []
    for row in rows:
        match = stored.get(row["address"])
        if match is None or match.application_id != tx.application_id:
            refused[row["address"]] = Conflict(
                "address", f"{row['address']!r} is provisioned by another application"
            )
            continue
        is_new = match.id == row["id"]
        found[row["address"]] = (_grant(match, policies), is_new)
        if is_new:
            created.append(row)
    record_many(
        tx,
        "grant.created",
        (
            (
                row["id"],
                {
                    "grant_id": row["id"],
                    "address": row["address"],
                    "workspace_id": row["workspace_id"],
                    "agent": row["agent"],
                },
            )
            for row in created
        ),
    )
    return found, refused


def _select_grants() -> sa.Select[Any]:
    return sa.select(
        _grants.c.id,
        _grants.c.application_id,
        _grants.c.address,
        _grants.c.workspace_id,
        _grants.c.status,
        _grants.c.agent,
        _grants.c.workspace_pinned,
        _grants.c.metadata,
        _grants.c.stored_bytes,
        _grants.c.created_at,
        _workspaces.c.name.label("workspace_name"),
        _workspaces.c.policy_version,
    ).join(_workspaces, _workspaces.c.id == _grants.c.workspace_id)


_Policies = dict[tuple[str, int], Policy]


def _policies(tx: Tx, rows: Iterable[sa.Row[Any]]) -> _Policies:
    """The policy of each (workspace, version) of ``rows``, parsed once per version.

    The grants' rows carry their workspace's policy version only: the policy's JSON
    is read from the workspace when no cached parse has that version (so a batch of
    thousands of grants decodes it at most once, not once a row). A policy changed
    between the two reads gives the grants of that workspace its newer version.
    """
    found: _Policies = {}
    missing: set[str] = set()
    for key in {(row.workspace_id, row.policy_version) for row in rows}:
        policy = cached_policy(*key)
        if policy is None:
            missing.add(key[0])
        else:
            found[key] = policy
    if missing:
        current = tx.conn.execute(
            sa.select(_workspaces.c.id, _workspaces.c.policy_version, _workspaces.c.policy).where(
                _workspaces.c.id.in_(sorted(missing))
            )
        ).all()
        newest = {wid: policy_of(wid, version, raw) for wid, version, raw in current}
        for row in rows:
            key = (row.workspace_id, row.policy_version)
            if key not in found:
                found[key] = newest[row.workspace_id]
    return found


_STATUSES = {status.value: status for status in GrantStatus}


def _grant(row: sa.Row[Any], policies: _Policies) -> Grant:
    return Grant(
        id=row.id,
        application_id=row.application_id,
        address=row.address,
        workspace_id=row.workspace_id,
        workspace=row.workspace_name,
        status=_STATUSES[row.status],
        agent=row.agent,
        policy=policies[row.workspace_id, row.policy_version],
        workspace_pinned=row.workspace_pinned,
        created_at=aware(row.created_at),
        metadata=row.metadata,
        stored_bytes=row.stored_bytes,
    )


def _by_id_or_address(key: str) -> sa.ColumnElement[bool]:
    if "@" in key:
        return _grants.c.address == key.strip().lower()
    return _grants.c.id == key


def get_grant(tx: Tx, key: str) -> Grant:
    """A grant by id or address; :class:`GrantNotFound` otherwise."""
    conn = tx.conn
    row = conn.execute(
        _select_grants().where(
            _grants.c.application_id == tx.application_id, _by_id_or_address(key)
        )
    ).first()
    if row is None:
        raise GrantNotFound(key)
    return _grant(row, _policies(tx, [row]))


def get_grants(tx: Tx, keys: Sequence[str]) -> dict[str, Grant]:
    """The grants of these keys (ids or addresses) that exist, by the key given: one
    query for the whole batch (:func:`get_grant` for one)."""
    ids = sorted({key for key in keys if "@" not in key})
    addresses = sorted({key.strip().lower() for key in keys if "@" in key})
    found: dict[str, Grant] = {}
    for chunk in _chunks([*ids, *addresses], 500):
        wanted_ids = [key for key in chunk if "@" not in key]
        wanted_addresses = [key for key in chunk if "@" in key]
        rows = tx.conn.execute(
            _select_grants().where(
                _grants.c.application_id == tx.application_id,
                sa.or_(_grants.c.id.in_(wanted_ids), _grants.c.address.in_(wanted_addresses)),
            )
        ).all()
        policies = _policies(tx, rows)
        for row in rows:
            grant = _grant(row, policies)
            found[grant.id] = found[grant.address] = grant
    return {key: found[wanted] for key in keys if (wanted := _lookup_key(key)) in found}


def _lookup_key(key: str) -> str:
    return key.strip().lower() if "@" in key else key


def set_status(tx: Tx, key: str, status: GrantStatus) -> Grant:
    """Change a grant's status, with a ``grant.status_changed`` event."""
    conn = tx.conn
    grant = get_grant(tx, key)
    if grant.status is not status:
        conn.execute(
            sa.update(_grants)
            .where(_grants.c.id == grant.id)
            .values(status=status.value, updated_at=utcnow())
        )
        record_many(
            tx,
            "grant.status_changed",
            [
                (
                    grant.id,
                    {"grant_id": grant.id, "from": grant.status.value, "to": status.value},
                )
            ],
        )
    return get_grant(tx, grant.id)


def statuses(tx: Tx, grant_ids: Iterable[str]) -> dict[str, GrantStatus]:
    """The current status of each existing grant of the application among ``grant_ids``."""
    wanted = sorted(set(grant_ids))
    rows = tx.conn.execute(
        sa.select(_grants.c.id, _grants.c.status).where(
            _grants.c.id.in_(wanted), _grants.c.application_id == tx.application_id
        )
    ).all()
    return {grant_id: GrantStatus(status) for grant_id, status in rows}


def grants_by_ids(tx: Tx, ids: Sequence[str]) -> dict[str, Grant]:
    """The grants with the given ids, by id."""
    conn = tx.conn
    found: dict[str, Grant] = {}
    for chunk in _chunks(ids, 1000):
        rows = [
            row
            for row in conn.execute(_select_grants().where(_grants.c.id.in_(chunk)))
            if row.application_id == tx.application_id
        ]
        policies = _policies(tx, rows)
        found.update((row.id, _grant(row, policies)) for row in rows)
    return found


def list_grants(
    tx: Tx,
    *,
    workspace: str | None = None,
    status: GrantStatus | None = None,
    agent: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
    after: str | None = None,
) -> list[Grant]:
    """Grants of the application by address, optionally of one workspace, status or
    agent class, after the address ``after`` (a keyset cursor: the last address of a page)."""
    conn = tx.conn
    query = _select_grants().where(*_filters(tx, workspace, status, agent))
    if after is not None:
        query = query.where(_grants.c.address > after.strip().lower())
    query = query.order_by(_grants.c.address).offset(offset).limit(limit)
    return _grants_of(tx, conn.execute(query).all())


def _grants_of(tx: Tx, rows: Sequence[sa.Row[Any]]) -> list[Grant]:
    policies = _policies(tx, rows)
    return [_grant(row, policies) for row in rows]


def _filters(
    tx: Tx, workspace: str | None, status: GrantStatus | None, agent: str | None = None
) -> list[sa.ColumnElement[bool]]:
    conditions = [_grants.c.application_id == tx.application_id]
    if workspace is not None:
        conditions.append(_grants.c.workspace_id == get_workspace(tx, workspace).id)
    if status is not None:
        conditions.append(_grants.c.status == GrantStatus(status).value)
    if agent is not None:
        conditions.append(_grants.c.agent == agent)
    return conditions


def grant_rows(
    tx: Tx, condition: sa.ColumnElement[bool], *, limit: int | None = None
) -> list[Grant]:
    """The application's grants matching ``condition``, by address."""
    query = (
        _select_grants()
        .where(_grants.c.application_id == tx.application_id, condition)
        .order_by(_grants.c.address)
        .limit(limit)
    )
    return _grants_of(tx, tx.conn.execute(query).all())


def count_grants(
    tx: Tx,
    *,
    workspace: str | None = None,
    status: GrantStatus | None = None,
    agent: str | None = None,
) -> int:
    """How many grants the application (or one of its workspaces) holds, of any
    status or of ``status``, of any agent class or of ``agent``."""
    query = sa.select(sa.func.count()).where(*_filters(tx, workspace, status, agent))
    return int(tx.conn.execute(query).scalar_one())


def count_by_status(tx: Tx) -> dict[GrantStatus, int]:
    """How many grants the application holds in each status (statuses it has none of
    are left out)."""
    query = (
        sa.select(_grants.c.status, sa.func.count())
        .where(_grants.c.application_id == tx.application_id)
        .group_by(_grants.c.status)
    )
    return {GrantStatus(status): int(count) for status, count in tx.conn.execute(query)}


def grant_ids(tx: Tx, keys: Iterable[str]) -> dict[str, str]:
    """Map each key (grant id or address) that names a grant of the application to its id."""
    conn = tx.conn
    by_address = [k.strip().lower() for k in keys if "@" in k]
    by_id = [k for k in keys if "@" not in k]
    found: dict[str, str] = {}
    if len(by_address) + len(by_id) <= _FEW:  # the intake's case: a few keys per batch
        for lookup, values in ((_by_address, by_address), (_by_id, by_id)):
            for value in values:
                found.update(
                    (value, gid)
                    for gid, app in lookup.fetch(conn, {"key": value})
                    if app == tx.application_id
                )
        return found
    for column, values in ((_grants.c.address, by_address), (_grants.c.id, by_id)):
        for chunk in _chunks(values, 1000):
            rows = conn.execute(
                sa.select(column, _grants.c.id, _grants.c.application_id).where(column.in_(chunk))
            )
            found.update((key, gid) for key, gid, app in rows.all() if app == tx.application_id)
    return found


_FEW = 16
_by_address, _by_id = (
    Prepared(sa.select(_grants.c.id, _grants.c.application_id).where(column == sa.bindparam("key")))
    for column in (_grants.c.address, _grants.c.id)
)


def delete_grants(tx: Tx, ids: Sequence[str]) -> list[str]:
    """Delete grants (their messages and queued work go with them); return those removed."""
    conn = tx.conn
    removed: list[tuple[str, str, str]] = []
    for chunk in _chunks(ids, 1000):
        removed.extend(
            conn.execute(
                sa.delete(_grants)
                .where(_grants.c.application_id == tx.application_id, _grants.c.id.in_(chunk))
                .returning(_grants.c.id, _grants.c.address, _grants.c.workspace_id)
            ).all()
        )
    # The workspace is named so that the event stays found by it (GET /v1/events?workspace=)
    # once the grant row is gone.
    record_many(
        tx,
        "grant.deleted",
        (
            (
                grant_id,
                {
                    "grant_id": grant_id,
                    "address": address,
                    "workspace_id": workspace_id,
                    "status": "deleted",
                },
            )
            for grant_id, address, workspace_id in removed
        ),
    )
    return [grant_id for grant_id, _, _ in removed]


def move_grants(tx: Tx, ids: Sequence[str], workspace: str) -> int:
    """Move grants into ``workspace`` and pin them there; return how many moved."""
    conn = tx.conn
    target = get_workspace(tx, workspace)
    moved: list[tuple[str, str]] = []
    for chunk in _chunks(ids, 1000):
        owned = sa.and_(_grants.c.application_id == tx.application_id, _grants.c.id.in_(chunk))
        moved.extend(
            conn.execute(
                sa.select(_grants.c.id, _grants.c.address).where(
                    owned, _grants.c.workspace_id != target.id
                )
            ).all()
        )
        conn.execute(
            sa.update(_grants)
            .where(owned)
            .values(workspace_id=target.id, workspace_pinned=True, updated_at=utcnow())
        )
    _record_moves(tx, moved, target.id, target.name)
    return len(moved)


@dataclass(frozen=True, slots=True)
class RegroupBatch:
    """What one batch of a regroup did: the grants it looked at, those that moved, and
    the cursor to continue after (None: there are no more)."""

    scanned: int
    moved: int
    after: str | None


def _regroup_candidates(
    *, created_after: datetime | None, domain_id: str | None
) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = [sa.not_(_grants.c.workspace_pinned)]
    if created_after is not None:
        where.append(_grants.c.created_at > created_after)
    if domain_id is not None:
        where.append(_grants.c.domain_id == domain_id)
    return where


def count_regroup(
    tx: Tx, *, created_after: datetime | None = None, domain_id: str | None = None
) -> int:
    """How many grants a regroup with these filters looks at (those not pinned)."""
    where = _regroup_candidates(created_after=created_after, domain_id=domain_id)
    return int(
        tx.conn.execute(
            sa.select(sa.func.count()).where(_grants.c.application_id == tx.application_id, *where)
        ).scalar_one()
    )


def regroup_batch(
    tx: Tx,
    *,
    after: str | None = None,
    limit: int = 1000,
    created_after: datetime | None = None,
    domain_id: str | None = None,
) -> RegroupBatch:
    """Re-apply the auto-group patterns to the next ``limit`` grants not pinned to a
    workspace (by id, after ``after``), created after ``created_after``, of the domain
    ``domain_id``: one bounded unit of work, its ``grant.workspace_changed`` events in
    it. A grant pinned meanwhile (a bulk move) is left where it was put."""
    conn = tx.conn
    where = _regroup_candidates(created_after=created_after, domain_id=domain_id)
    if after is not None:
        where.append(_grants.c.id > after)
    rows = conn.execute(
        sa.select(_grants.c.id, _grants.c.address, _grants.c.workspace_id)
        .where(_grants.c.application_id == tx.application_id, *where)
        .order_by(_grants.c.id)
        .limit(limit)
    ).all()
    if not rows:
        return RegroupBatch(0, 0, None)
    routes = pattern_table(tx)
    fallback = default_workspace_id(tx)
    targets: dict[str, list[str]] = {}
    for grant_id, address, current in rows:
        target = routes.resolve(address.rsplit("@", 1)[1]) or fallback
        if target != current:
            targets.setdefault(target, []).append(grant_id)
    names: dict[str, str] = dict(
        conn.execute(
            sa.select(_workspaces.c.id, _workspaces.c.name).where(
                _workspaces.c.application_id == tx.application_id
            )
        ).all()
    )
    moved = 0
    now = utcnow()
    for target, ids in targets.items():
        changed: list[tuple[str, str]] = []
        for chunk in _chunks(ids, 1000):
            changed.extend(
                conn.execute(
                    sa.update(_grants)
                    .where(
                        _grants.c.application_id == tx.application_id,
                        _grants.c.id.in_(chunk),
                        sa.not_(_grants.c.workspace_pinned),
                    )
                    .values(workspace_id=target, updated_at=now)
                    .returning(_grants.c.id, _grants.c.address)
                ).all()
            )
        _record_moves(tx, changed, target, names[target])
        moved += len(changed)
    last = str(rows[-1].id)
    return RegroupBatch(len(rows), moved, last if len(rows) == limit else None)


def regroup(tx: Tx) -> int:
    """Re-apply the auto-group patterns to every grant not pinned to a workspace, in
    this one transaction (the runtime's regroup runs :func:`regroup_batch` in
    transactions of its own). Returns how many grants changed workspace."""
    moved, after = 0, None
    while True:
        batch = regroup_batch(tx, after=after)
        moved += batch.moved
        if batch.after is None:
            return moved
        after = batch.after


def _record_moves(
    tx: Tx,
    moved: Iterable[tuple[str, str]],
    workspace_id: str,
    workspace: str,
) -> None:
    record_many(
        tx,
        "grant.workspace_changed",
        (
            (
                grant_id,
                {
                    "grant_id": grant_id,
                    "address": address,
                    "workspace_id": workspace_id,
                    "workspace": workspace,
                },
            )
            for grant_id, address in moved
        ),
    )


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
