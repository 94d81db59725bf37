"""Lists of an application and their entries.

A list row (``lists``) has a type, a size and a ``revision`` that every change
of its entries bumps; entries (``list_entries``) are unique per list, in normal
form (the runtime normalises them with :mod:`mailfleet.model.lists` before it
calls here). Every change bumps the application's policy version
(:func:`mailfleet.store.rules.bump_version`), in the same transaction, so
every worker's cache reloads.

Entries carry no application column: every function reaches them through a
list it first found among the application's own (:func:`get_list`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..model.errors import ListExists, ListNotFound
from ..model.lists import ListType, PolicyList
from .dialect import insert
from .events import record
from .rules import bump_version
from .scope import Tx
from .tables import list_entries_table, lists_table, new_id, utcnow
from .timestamps import aware

__all__ = [
    "add_entries",
    "create_list",
    "delete_list",
    "get_list",
    "list_entries",
    "list_lists",
    "list_revisions",
    "load_entries",
    "remove_entries",
]

_lists = lists_table
_entries = list_entries_table
_CHUNK = 500  # values per IN (...) lookup: well under SQLite's parameter limit


def _policy_list(row: sa.Row[Any]) -> PolicyList:
    return PolicyList(
        id=row.id,
        name=row.name,
        type=row.type,
        size=row.size,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        revision=row.revision,
    )


def create_list(tx: Tx, name: str, list_type: ListType) -> PolicyList:
    """Create an empty list; :class:`ListExists` when the name is taken."""
    taken = tx.conn.execute(
        sa.select(_lists.c.id).where(
            _lists.c.application_id == tx.application_id, _lists.c.name == name
        )
    ).first()
    if taken is not None:
        raise ListExists("name", f"a list named {name!r} exists already ({taken.id})")
    now = utcnow()
    list_id = new_id()
    values = {
        "id": list_id,
        "application_id": tx.application_id,
        "name": name,
        "type": list_type,
        "size": 0,
        "revision": 1,
        "created_at": now,
        "updated_at": now,
    }
    tx.conn.execute(sa.insert(_lists).values(values))
    bump_version(tx)
    record(tx, "list.created", {"list_id": list_id, "name": name, "type": list_type})
    return PolicyList(list_id, name, list_type, 0, now, now, 1)


def get_list(tx: Tx, key: str, *, for_update: bool = False) -> PolicyList:
    """A list of the application by id or name; :class:`ListNotFound` otherwise."""
    query = sa.select(_lists).where(
        _lists.c.application_id == tx.application_id,
        sa.or_(_lists.c.id == key, _lists.c.name == key),
    )
    if for_update:
        query = query.with_for_update()
    row = tx.conn.execute(query).first()
    if row is None:
        raise ListNotFound(key)
    return _policy_list(row)


def list_lists(tx: Tx, *, limit: int | None = 100, after: str | None = None) -> list[PolicyList]:
    """The application's lists in the order they were made (ids after ``after``)."""
    query = sa.select(_lists).where(_lists.c.application_id == tx.application_id)
    if after:
        query = query.where(_lists.c.id > after)
    query = query.order_by(_lists.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [_policy_list(row) for row in tx.conn.execute(query)]


def delete_list(tx: Tx, list_id: str) -> None:
    """Delete a list and its entries (the caller checked that no rule refers to it)."""
    tx.conn.execute(
        sa.delete(_lists).where(
            _lists.c.application_id == tx.application_id, _lists.c.id == list_id
        )
    )
    bump_version(tx)
    record(tx, "list.deleted", {"list_id": list_id})


def _present(tx: Tx, list_id: str, values: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        found.update(
            row[0]
            for row in tx.conn.execute(
                sa.select(_entries.c.value).where(
                    _entries.c.list_id == list_id, _entries.c.value.in_(chunk)
                )
            )
        )
    return found


def add_entries(tx: Tx, list_id: str, values: Sequence[str]) -> tuple[set[str], int]:
    """Add distinct normal ``values`` to a list of the application (found first):
    the values it held already, and its new size. One INSERT for all the new ones."""
    found = get_list(tx, list_id, for_update=True)
    present = _present(tx, found.id, values)
    new = [{"list_id": found.id, "value": v} for v in values if v not in present]
    if new:
        statement = insert(tx.conn, _entries).on_conflict_do_nothing()
        tx.conn.execute(statement, new)
    size = _changed(tx, found, len(new), added=len(new), removed=0)
    return present, size


def remove_entries(tx: Tx, list_id: str, values: Sequence[str]) -> tuple[set[str], int]:
    """Remove distinct normal ``values`` from a list: the values it held (now removed),
    and its new size."""
    found = get_list(tx, list_id, for_update=True)
    present = _present(tx, found.id, values)
    gone = sorted(present)
    for start in range(0, len(gone), _CHUNK):
        tx.conn.execute(
            sa.delete(_entries).where(
                _entries.c.list_id == found.id, _entries.c.value.in_(gone[start : start + _CHUNK])
            )
        )
    size = _changed(tx, found, -len(gone), added=0, removed=len(gone))
    return present, size


def _changed(tx: Tx, found: PolicyList, delta: int, *, added: int, removed: int) -> int:
    if not (added or removed):
        return found.size
    tx.conn.execute(
        sa.update(_lists)
        .where(_lists.c.application_id == tx.application_id, _lists.c.id == found.id)
        .values(
            size=_lists.c.size + delta,
            revision=_lists.c.revision + 1,
            updated_at=utcnow(),
        )
    )
    bump_version(tx)
    record(tx, "list.updated", {"list_id": found.id, "added": added, "removed": removed})
    return found.size + delta


def list_entries(
    tx: Tx, list_id: str, *, limit: int | None = 100, after: str | None = None
) -> list[str]:
    """A list's entries in order (after the entry ``after``)."""
    found = get_list(tx, list_id)
    query = sa.select(_entries.c.value).where(_entries.c.list_id == found.id)
    if after:
        query = query.where(_entries.c.value > after)
    query = query.order_by(_entries.c.value)
    if limit is not None:
        query = query.limit(limit)
    return [row[0] for row in tx.conn.execute(query)]


def list_revisions(tx: Tx) -> dict[str, tuple[ListType, int]]:
    """Every list of the application: its type and revision (what the cache compares)."""
    rows = tx.conn.execute(
        sa.select(_lists.c.id, _lists.c.type, _lists.c.revision).where(
            _lists.c.application_id == tx.application_id
        )
    )
    return {row.id: (row.type, row.revision) for row in rows}


def load_entries(tx: Tx, list_ids: Iterable[str]) -> dict[str, set[str]]:
    """The entries of these lists of the application, as sets."""
    wanted = list(list_ids)
    loaded: dict[str, set[str]] = {}
    if not wanted:
        return loaded
    own = {
        row[0]
        for row in tx.conn.execute(
            sa.select(_lists.c.id).where(
                _lists.c.application_id == tx.application_id, _lists.c.id.in_(wanted)
            )
        )
    }
    for list_id in wanted:
        if list_id not in own:
            continue
        result = tx.conn.execute(sa.select(_entries.c.value).where(_entries.c.list_id == list_id))
        loaded[list_id] = set(result.scalars())
    return loaded
