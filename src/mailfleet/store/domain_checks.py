"""A domain's authentication state: the last check's report, its state, the next audit.

A domain is ``pending`` until it is first checked, then ``verified`` or
``failed``. :func:`save_check` stores a report and moves the state, with the
event of the move in the same transaction (``domain.audit_failed`` with the
failing checks, ``domain.audit_passed``). :func:`claim_due_audits` hands a
due domain to exactly one worker: the claim moves its ``next_audit_at`` with
a compare-and-set, so of several workers reading the same due row only the
first update matches it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..model.addresses import normalize_domain
from ..model.errors import DomainNotRegistered
from .events import record
from .scope import Tx
from .tables import domains_table, utcnow

__all__ = ["DomainState", "SendingState", "claim_due_audits", "save_check", "sending_states"]

_domains = domains_table

DomainState = str
"""``pending``, ``verified`` or ``failed``."""


@dataclass(frozen=True, slots=True)
class SendingState:
    """What the outbound gate needs of a domain: its state and the failing checks."""

    state: DomainState
    failing: tuple[dict[str, Any], ...]


def save_check(
    tx: Tx,
    name: str,
    report: dict[str, Any],
    *,
    state: DomainState | None,
    next_audit_at: datetime | None,
) -> tuple[DomainState, DomainState]:
    """Store a check's ``report`` (``PreflightReport.as_json``) for domain ``name``.

    ``state`` is the new state, or None to keep the current one (a check
    that failed only for a temporary DNS error). Returns ``(before, after)``;
    a move into ``failed`` records ``domain.audit_failed`` (with the failing
    checks), a move into ``verified`` records ``domain.audit_passed``.
    """
    domain = normalize_domain(name)
    row = tx.conn.execute(
        sa.select(_domains.c.id, _domains.c.state).where(
            _domains.c.application_id == tx.application_id, _domains.c.name == domain
        )
    ).first()
    if row is None:
        raise DomainNotRegistered(domain, field="domain")
    before: DomainState = row.state
    after = before if state is None else state
    tx.conn.execute(
        sa.update(_domains)
        .where(_domains.c.application_id == tx.application_id, _domains.c.id == row.id)
        .values(
            state=after,
            authenticated=after == "verified",
            audit=report,
            audited_at=utcnow(),
            next_audit_at=next_audit_at,
        )
    )
    if after != before:
        payload: dict[str, Any] = {"domain_id": row.id, "domain": domain, "state": after}
        if after == "failed":
            payload["failing"] = _failing(report)
            record(tx, "domain.audit_failed", payload)
        elif after == "verified":
            payload["previous_state"] = before
            record(tx, "domain.audit_passed", payload)
    return before, after


def claim_due_audits(tx: Tx, *, interval: float, limit: int = 50) -> list[str]:
    """Claim up to ``limit`` domains whose audit is due, moving each one's next audit
    ``interval`` seconds on; returns the names this caller won.

    A domain never audited (``next_audit_at`` unset) is due at once. The
    claim is a compare-and-set on the value read, so a domain is claimed by
    one worker however many ask at once.
    """
    now = utcnow()
    due = tx.conn.execute(
        sa.select(_domains.c.id, _domains.c.name, _domains.c.next_audit_at)
        .where(
            _domains.c.application_id == tx.application_id,
            sa.or_(_domains.c.next_audit_at.is_(None), _domains.c.next_audit_at <= now),
        )
        .order_by(_domains.c.next_audit_at.is_(None).desc(), _domains.c.next_audit_at)
        .limit(limit)
    ).all()
    later = now + timedelta(seconds=interval)
    won: list[str] = []
    for row in due:
        seen = _domains.c.next_audit_at
        unchanged = seen.is_(None) if row.next_audit_at is None else seen == row.next_audit_at
        claimed = tx.conn.execute(
            sa.update(_domains)
            .where(
                _domains.c.application_id == tx.application_id, _domains.c.id == row.id, unchanged
            )
            .values(next_audit_at=later)
        )
        if claimed.rowcount == 1:
            won.append(row.name)
    return won


def sending_states(tx: Tx, names: Iterable[str]) -> dict[str, SendingState]:
    """The state and failing checks of each registered domain among ``names``."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = tx.conn.execute(
        sa.select(_domains.c.name, _domains.c.state, _domains.c.audit).where(
            _domains.c.application_id == tx.application_id, _domains.c.name.in_(wanted)
        )
    )
    return {row.name: SendingState(row.state, tuple(_failing(row.audit or {}))) for row in rows}


def _failing(report: dict[str, Any]) -> list[dict[str, Any]]:
    checks: Sequence[dict[str, Any]] = report.get("checks") or ()
    return [
        {key: check.get(key) for key in ("name", "record", "explanation", "fix", "dns_error")}
        for check in checks
        if check.get("status") == "fail"
    ]
