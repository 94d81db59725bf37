"""The suppression list and the soft-bounce counts behind it.

An entry applies to the whole application (``scope`` ``""``) or to one
workspace (its id). Adding an address that is already there keeps the first
entry: its reason and source event stay what first caused it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..model.deliverability import Suppression, SuppressionReason
from .dialect import insert
from .scope import Tx
from .tables import soft_bounces_table, suppressions_table, utcnow, workspaces_table
from .timestamps import aware

__all__ = [
    "NewSuppression",
    "add_soft_bounces",
    "clear_soft_bounces",
    "count_suppressions",
    "list_suppressions",
    "remove",
    "suppress",
    "suppressed",
]

_sup = suppressions_table
_soft = soft_bounces_table
_ws = workspaces_table


@dataclass(frozen=True, slots=True)
class NewSuppression:
    """An address to suppress (``workspace_id`` None: the whole application)."""

    address: str
    reason: SuppressionReason
    detail: str | None = None
    workspace_id: str | None = None
    event_id: int | None = None
    created_at: datetime | None = None


def suppress(tx: Tx, entries: Sequence[NewSuppression]) -> int:
    """Add the entries not there yet, in one statement; how many were new."""
    if not entries:
        return 0
    now = utcnow()
    rows = {
        (entry.address, entry.workspace_id or ""): {
            "application_id": tx.application_id,
            "scope": entry.workspace_id or "",
            "address": entry.address,
            "reason": entry.reason.value,
            "detail": (entry.detail or "")[:2000] or None,
            "event_id": entry.event_id,
            "created_at": entry.created_at or now,
        }
        for entry in entries
    }
    statement = (
        insert(tx.conn, _sup)
        .on_conflict_do_nothing(index_elements=["application_id", "address", "scope"])
        .returning(_sup.c.id)
    )
    return len(tx.conn.execute(statement, list(rows.values())).all())


def remove(tx: Tx, address: str, *, workspace_id: str | None = None) -> bool:
    """Take ``address`` off the list (of the application, or of one workspace)."""
    result = tx.conn.execute(
        sa.delete(_sup).where(
            _sup.c.application_id == tx.application_id,
            _sup.c.address == address,
            _sup.c.scope == (workspace_id or ""),
        )
    )
    tx.conn.execute(
        sa.delete(_soft).where(
            _soft.c.application_id == tx.application_id, _soft.c.address == address
        )
    )
    return result.rowcount > 0


def suppressed(
    tx: Tx, addresses: Iterable[str], *, workspace_id: str | None = None
) -> dict[str, Suppression]:
    """Which of ``addresses`` a grant of ``workspace_id`` must not mail, with why."""
    wanted = sorted(set(addresses))
    if not wanted:
        return {}
    scopes = [""] if workspace_id is None else ["", workspace_id]
    found: dict[str, Suppression] = {}
    for start in range(0, len(wanted), 500):
        rows = tx.conn.execute(
            _select().where(
                _sup.c.application_id == tx.application_id,
                _sup.c.address.in_(wanted[start : start + 500]),
                _sup.c.scope.in_(scopes),
            )
        )
        for row in rows:
            found.setdefault(row.address, _entry(row))
    return found


def list_suppressions(
    tx: Tx,
    *,
    reason: SuppressionReason | None = None,
    workspace_id: str | None = None,
    after: int = 0,
    limit: int | None = 100,
) -> list[Suppression]:
    """Entries in the order they were added, after the position ``after``."""
    query = _select().where(_sup.c.application_id == tx.application_id, _sup.c.id > after)
    if reason is not None:
        query = query.where(_sup.c.reason == reason.value)
    if workspace_id is not None:
        query = query.where(_sup.c.scope == workspace_id)
    query = query.order_by(_sup.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [_entry(row) for row in tx.conn.execute(query)]


def count_suppressions(tx: Tx) -> int:
    """How many entries the application's list holds."""
    query = sa.select(sa.func.count()).where(_sup.c.application_id == tx.application_id)
    return int(tx.conn.execute(query).scalar_one())


def add_soft_bounces(tx: Tx, addresses: Sequence[str]) -> dict[str, int]:
    """Count one more soft bounce in a row for each address; the new counts."""
    if not addresses:
        return {}
    now = utcnow()
    values = insert(tx.conn, _soft)
    statement = values.on_conflict_do_update(
        index_elements=[_soft.c.application_id, _soft.c.address],
        set_={"count": _soft.c.count + 1, "updated_at": values.excluded.updated_at},
    ).returning(_soft.c.address, _soft.c.count)
    counts: dict[str, int] = {}
    for address in addresses:  # one row a statement: RETURNING of executemany is not portable
        row = tx.conn.execute(
            statement,
            {
                "application_id": tx.application_id,
                "address": address,
                "count": 1,
                "updated_at": now,
            },
        ).one()
        counts[row[0]] = int(row[1])
    return counts


def clear_soft_bounces(tx: Tx, addresses: Iterable[str]) -> None:
    """A delivery succeeded: the soft bounces of these addresses are no longer in a row."""
    wanted = sorted(set(addresses))
    for start in range(0, len(wanted), 500):
        tx.conn.execute(
            sa.delete(_soft).where(
                _soft.c.application_id == tx.application_id,
                _soft.c.address.in_(wanted[start : start + 500]),
            )
        )


def _select() -> sa.Select[Any]:
    return sa.select(
        _sup.c.id,
        _sup.c.address,
        _sup.c.reason,
        _sup.c.detail,
        _sup.c.event_id,
        _sup.c.created_at,
        _ws.c.name.label("workspace"),
    ).outerjoin(_ws, _ws.c.id == _sup.c.scope)


def _entry(row: Any) -> Suppression:
    return Suppression(
        id=row.id,
        address=row.address,
        reason=SuppressionReason(row.reason),
        detail=row.detail,
        workspace=row.workspace,
        event_id=row.event_id,
        created_at=aware(row.created_at),
    )
