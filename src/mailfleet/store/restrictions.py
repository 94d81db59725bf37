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

from .dialect import insert
from .events import record_act
from .scope import Tx
from .tables import restrictions_table, utcnow

__all__ = ["lift", "restrict", "restricted_subjects"]

_restrictions = restrictions_table


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
