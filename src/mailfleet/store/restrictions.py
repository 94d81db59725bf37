"""Restrictions: an operator blocks a workspace, a domain or the application from sending.

A restricted grant is a grant whose status is ``restricted``; a restriction of
a wider subject is a row here, and the outbox refuses every send of the
grants under it (``restricted``, HTTP 403), whatever their rates. Both acts
are events (``<kind>.restricted``, ``<kind>.restriction_lifted``) naming who
and why.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from ..model.records import GrantStatus, Restriction
from .dialect import insert
from .events import record_act
from .scope import Tx
from .tables import events_table, grants_table, restrictions_table, utcnow
from .timestamps import aware

__all__ = ["lift", "list_restrictions", "restrict", "restricted_subjects"]

_restrictions = restrictions_table
_grants = grants_table
_events = events_table


def restrict(tx: Tx, kind: str, subject: str, *, reason: str, by: str) -> None:
    """Block ``subject`` from sending (a second restriction replaces the first's reason)."""
    values = {
        "application_id": tx.application_id,
        "kind": kind,
        "subject": subject,
        "reason": reason,
        "by": by,
        "created_at": utcnow(),
    }
    statement = insert(tx.conn, _restrictions).values(values)
    tx.conn.execute(
        statement.on_conflict_do_update(
            index_elements=["application_id", "kind", "subject"],
            set_={"reason": reason, "by": by, "created_at": values["created_at"]},
        )
    )
    record_act(tx, kind, subject, "restricted", reason=reason, by=by)


def lift(tx: Tx, kind: str, subject: str, *, reason: str, by: str) -> bool:
    """Unblock ``subject``; whether it was restricted."""
    lifted = tx.conn.execute(
        sa.delete(_restrictions).where(
            _restrictions.c.application_id == tx.application_id,
            _restrictions.c.kind == kind,
            _restrictions.c.subject == subject,
        )
    ).rowcount
    if lifted:
        record_act(tx, kind, subject, "restriction_lifted", reason=reason, by=by)
    return bool(lifted)


def restricted_subjects(
    tx: Tx, workspace_ids: Iterable[str], domains: Iterable[str]
) -> dict[tuple[str, str], str]:
    """Which of these workspaces and domains, and the application, are restricted: why."""
    wanted = [("workspace", w) for w in set(workspace_ids)] + [("domain", d) for d in set(domains)]
    wanted.append(("application", tx.application_id))
    rows = tx.conn.execute(
        sa.select(_restrictions.c.kind, _restrictions.c.subject, _restrictions.c.reason).where(
            _restrictions.c.application_id == tx.application_id,
            sa.tuple_(_restrictions.c.kind, _restrictions.c.subject).in_(wanted),
        )
    )
    return {(row.kind, row.subject): row.reason for row in rows}


def list_restrictions(tx: Tx, *, kind: str | None = None) -> list[Restriction]:
    """Every restriction of the application (of ``kind``), by kind and subject: restricted
    grants (who and why from their latest ``grant.restricted`` event) and the rows here."""
    found: list[Restriction] = []
    if kind in (None, "grant"):
        ids = list(
            tx.conn.execute(
                sa.select(_grants.c.id).where(
                    _grants.c.application_id == tx.application_id,
                    _grants.c.status == GrantStatus.RESTRICTED.value,
                )
            ).scalars()
        )
        acts: dict[str, tuple[dict[str, object], object]] = {}
        for start in range(0, len(ids), 500):
            rows = tx.conn.execute(
                sa.select(_events.c.grant_id, _events.c.payload, _events.c.created_at)
                .where(
                    _events.c.application_id == tx.application_id,
                    _events.c.type == "grant.restricted",
                    _events.c.grant_id.in_(ids[start : start + 500]),
                )
                .order_by(_events.c.id)
            )
            for row in rows:  # the latest act wins
                acts[row.grant_id] = (row.payload or {}, row.created_at)
        for grant_id in ids:
            payload, when = acts.get(grant_id, ({}, None))
            found.append(
                Restriction(
                    "grant",
                    grant_id,
                    _text(payload.get("reason")),
                    _text(payload.get("by")),
                    None if when is None else aware(when),  # type: ignore[arg-type]
                )
            )
    if kind != "grant":
        query = sa.select(_restrictions).where(_restrictions.c.application_id == tx.application_id)
        if kind is not None:
            query = query.where(_restrictions.c.kind == kind)
        found.extend(
            Restriction(row.kind, row.subject, row.reason, row.by, aware(row.created_at))
            for row in tx.conn.execute(query)
        )
    return sorted(found, key=lambda r: (r.kind, r.subject))


def _text(value: object) -> str | None:
    return None if value is None else str(value)
