"""A grant's stored mail: what it uses, what it received today, deleting, expiring.

``grants.stored_bytes`` is the size of the grant's inbound messages (their
raw bytes as stored): ``queue.enqueue`` adds to it in the storing
transaction, and every deletion here takes off what it removed, in its own
transaction, from the rows the ``DELETE`` actually returned (so two
deleters never take off the same message twice).

**Full, and available again.** When the MX first refuses mail for a grant
because its storage is used up, :func:`mark_storage_full` sets
``grants.storage_full_at`` (compare and set: one ``grant.storage_full``
event per crossing, however many workers refuse); a deletion that brings
the grant back under its ``storage_limit_bytes`` clears it with a
``grant.storage_available`` event.

**Retention.** :func:`expired_batch` deletes, oldest first, at most ``limit``
inbound messages of the application older than their grant's policy allows:
the ``spam`` folder after ``spam_retention_days``, every other inbound folder
after ``inbox_retention_days``. Sent mail is not expired, nor a message
still waiting for its handler (a queue entry, dead letters included). The
round itself is claimed with :func:`claim_sweep` (one worker a round).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .dialect import insert
from .events import record, record_many
from .grants import get_grant
from .scope import Tx
from .tables import (
    grants_table,
    messages_table,
    outbound_table,
    queue_table,
    retention_sweeps_table,
    utcnow,
    workspaces_table,
)
from .workspaces import policy_of

__all__ = [
    "DeletedMessages",
    "SweptBatch",
    "claim_sweep",
    "delete_messages",
    "expired_batch",
    "mark_storage_full",
    "received_since",
]

_messages = messages_table
_grants = grants_table
_queue = queue_table
_workspaces = workspaces_table
_sweeps = retention_sweeps_table
_out = outbound_table


@dataclass(frozen=True, slots=True)
class DeletedMessages:
    """What :func:`delete_messages` removed: the ids, the bytes its storage got back,
    and the grant's stored bytes after."""

    grant_id: str
    deleted: tuple[str, ...]
    freed_bytes: int
    stored_bytes: int


@dataclass(frozen=True, slots=True)
class SweptBatch:
    """One retention batch: messages deleted, bytes freed, per grant ``(count, bytes)``."""

    deleted: int
    freed_bytes: int
    grants: dict[str, tuple[int, int]]


def received_since(tx: Tx, grant_ids: Iterable[str], since: datetime) -> dict[str, int]:
    """Inbound messages each grant has stored since ``since`` (``messages_by_grant``)."""
    wanted = sorted(set(grant_ids))
    if not wanted:
        return {}
    rows = tx.conn.execute(
        sa.select(_messages.c.grant_id, sa.func.count())
        .where(
            _messages.c.grant_id.in_(wanted),
            _messages.c.created_at >= since,
            _messages.c.direction == "in",
            _messages.c.application_id == tx.application_id,
        )
        .group_by(_messages.c.grant_id)
    )
    return {grant_id: int(count) for grant_id, count in rows.all()}


def mark_storage_full(tx: Tx, grant_id: str, *, refused_bytes: int) -> bool:
    """Mark the grant full and record ``grant.storage_full``, unless it is marked already.

    Returns whether this call marked it (the event is written once per crossing)."""
    now = utcnow()
    marked = tx.conn.execute(
        sa.update(_grants)
        .where(
            _grants.c.id == grant_id,
            _grants.c.application_id == tx.application_id,
            _grants.c.storage_full_at.is_(None),
        )
        .values(storage_full_at=now)
        .returning(_grants.c.id)
    ).first()
    if marked is None:
        return False
    grant = get_grant(tx, grant_id)
    record(
        tx,
        "grant.storage_full",
        {
            "grant_id": grant.id,
            "address": grant.address,
            "stored_bytes": grant.stored_bytes,
            "storage_limit_bytes": grant.policy.storage_limit_bytes,
            "refused_bytes": refused_bytes,
        },
        grant_id=grant.id,
    )
    return True


def delete_messages(tx: Tx, grant: str, message_ids: Sequence[str]) -> DeletedMessages:
    """Delete messages of one grant (id or address; :class:`~mailfleet.GrantNotFound`
    otherwise), inbound or sent, with their queue entries; ids that are not the
    grant's are left alone. A sent message still on its way (``pending``) is not
    deleted. Each deletion is a ``message.deleted`` event."""
    found = get_grant(tx, grant)
    wanted = sorted(set(message_ids))
    if not wanted:
        return DeletedMessages(found.id, (), 0, found.stored_bytes)
    pending = sa.exists().where(_out.c.message_id == _messages.c.id, _out.c.status == "pending")
    rows: list[Any] = []
    for start in range(0, len(wanted), 1000):
        rows.extend(
            tx.conn.execute(
                sa.delete(_messages)
                .where(
                    _messages.c.id.in_(wanted[start : start + 1000]),
                    _messages.c.grant_id == found.id,
                    _messages.c.application_id == tx.application_id,
                    ~pending,
                )
                .returning(_messages.c.id, _messages.c.direction, _messages.c.size)
            ).all()
        )
    freed = sum(row.size for row in rows if row.direction == "in")
    after = _release(tx, {found.id: freed}).get(found.id, found.stored_bytes)
    record_many(
        tx,
        "message.deleted",
        ((found.id, {"grant_id": found.id, "message_id": row.id}) for row in rows),
    )
    return DeletedMessages(found.id, tuple(sorted(row.id for row in rows)), freed, after)


def _release(tx: Tx, freed: dict[str, int]) -> dict[str, int]:
    """Take ``freed`` bytes off each grant's storage (never below 0); clear the full
    mark of those now under their limit, with ``grant.storage_available``. Returns
    each grant's stored bytes after."""
    conn = tx.conn
    changed = {g: n for g, n in freed.items() if n > 0}
    if not changed:
        return {}
    conn.execute(
        sa.update(_grants)
        .where(_grants.c.id == sa.bindparam("gid"), _grants.c.application_id == tx.application_id)
        .values(
            stored_bytes=sa.case(
                (
                    _grants.c.stored_bytes > sa.bindparam("freed"),
                    _grants.c.stored_bytes - sa.bindparam("freed"),
                ),
                else_=0,
            )
        ),
        [{"gid": g, "freed": n} for g, n in sorted(changed.items())],
    )
    rows = conn.execute(
        sa.select(
            _grants.c.id,
            _grants.c.address,
            _grants.c.stored_bytes,
            _grants.c.storage_full_at,
            _grants.c.workspace_id,
            _workspaces.c.policy_version,
            _workspaces.c.policy,
        )
        .join(_workspaces, _workspaces.c.id == _grants.c.workspace_id)
        .where(_grants.c.id.in_(sorted(changed)), _grants.c.application_id == tx.application_id)
    ).all()
    available = []
    for row in rows:
        if row.storage_full_at is None:
            continue
        limit = policy_of(row.workspace_id, row.policy_version, row.policy).storage_limit_bytes
        if row.stored_bytes < limit:
            available.append((row, limit))
    if available:
        conn.execute(
            sa.update(_grants)
            .where(_grants.c.id.in_([row.id for row, _ in available]))
            .values(storage_full_at=None)
        )
        record_many(
            tx,
            "grant.storage_available",
            (
                (
                    row.id,
                    {
                        "grant_id": row.id,
                        "address": row.address,
                        "stored_bytes": row.stored_bytes,
                        "storage_limit_bytes": limit,
                    },
                )
                for row, limit in available
            ),
        )
    return {row.id: int(row.stored_bytes) for row in rows}


def expired_batch(tx: Tx, *, now: datetime, limit: int) -> SweptBatch:
    """Delete up to ``limit`` expired inbound messages of the application, oldest first
    (see the module), and give their grants the bytes back: one transaction."""
    conn = tx.conn
    workspaces = conn.execute(
        sa.select(_workspaces.c.id, _workspaces.c.policy_version, _workspaces.c.policy).where(
            _workspaces.c.application_id == tx.application_id
        )
    ).all()
    waiting = sa.exists().where(_queue.c.message_id == _messages.c.id)
    chosen: list[str] = []
    for workspace in workspaces:
        policy = policy_of(workspace.id, workspace.policy_version, workspace.policy)
        for spam, days in (
            (True, policy.spam_retention_days),
            (False, policy.inbox_retention_days),
        ):
            left = limit - len(chosen)
            if left <= 0:
                break
            folder = (
                _messages.c.folder == "spam"
                if spam
                else _messages.c.folder.not_in(["spam", "sent"])
            )
            chosen.extend(
                conn.execute(
                    sa.select(_messages.c.id)
                    .join(_grants, _grants.c.id == _messages.c.grant_id)
                    .where(
                        _messages.c.application_id == tx.application_id,
                        folder,
                        _messages.c.created_at < now - timedelta(days=days),
                        _messages.c.direction == "in",
                        _grants.c.workspace_id == workspace.id,
                        ~waiting,
                    )
                    .order_by(_messages.c.created_at)
                    .limit(left)
                ).scalars()
            )
    if not chosen:
        return SweptBatch(0, 0, {})
    deleted = conn.execute(
        sa.delete(_messages)
        .where(_messages.c.id.in_(chosen), _messages.c.application_id == tx.application_id)
        .returning(_messages.c.grant_id, _messages.c.size)
    ).all()
    per_grant: dict[str, tuple[int, int]] = {}
    for grant_id, size in deleted:
        count, freed = per_grant.get(grant_id, (0, 0))
        per_grant[grant_id] = (count + 1, freed + size)
    _release(tx, {g: freed for g, (_, freed) in per_grant.items()})
    record_many(
        tx,
        "grant.messages_expired",
        (
            (g, {"grant_id": g, "deleted": count, "freed_bytes": freed})
            for g, (count, freed) in sorted(per_grant.items())
        ),
    )
    return SweptBatch(len(deleted), sum(f for _, f in per_grant.values()), per_grant)


def claim_sweep(tx: Tx, *, now: float, interval: float, holder: str) -> bool:
    """Take this round of the application's retention sweep if it is due: move its
    ``next_at`` to ``now + interval`` (compare and set). One caller wins a round."""
    conn = tx.conn
    due = conn.execute(
        sa.update(_sweeps)
        .where(_sweeps.c.application_id == tx.application_id, _sweeps.c.next_at <= now)
        .values(next_at=now + interval, holder=holder, updated_at=utcnow())
        .returning(_sweeps.c.application_id)
    ).first()
    if due is not None:
        return True
    created = conn.execute(
        insert(conn, _sweeps)
        .values(
            application_id=tx.application_id,
            next_at=now + interval,
            holder=holder,
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["application_id"])
        .returning(_sweeps.c.application_id)
    ).first()
    return created is not None
