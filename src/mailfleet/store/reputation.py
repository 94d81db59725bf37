"""Reputation kept in the store: one rolling window per grant, workspace, domain and application.

Each final outcome of a send to one recipient (delivered, or refused for
good) counts as a send in four windows: its grant's, its workspace's, its
domain's and the application's (:func:`record_sends`). The four sequence
numbers it gets are kept on its outbound row, per recipient, so a hard
bounce or a complaint arriving days later is counted in the windows of the
send it belongs to (:func:`record_outcomes`), or not at all once that send
has left them.

Every change is a read-modify-write of the subject's row inside the
caller's transaction, the rows locked in one order (``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite has one writer): several workers never lose
an update or count one twice. After the change each touched subject is
judged (:func:`~mailfleet.model.reputation.assess`) with its workspace's
policy (a domain and the application with the platform's): a grant's
status follows its state (``active``, ``under_review``, ``paused``) with a
``grant.status_changed`` event, unless an operator paused or restricted it;
a workspace, domain or application records ``<kind>.status_changed`` and,
paused, stops the sending of all its grants.
A pause never lifts by itself: :func:`reinstate` does, and restarts the
window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..model.policy import Policy
from ..model.records import GrantStatus
from ..model.reputation import (
    Assessment,
    ReputationLevel,
    ReputationState,
    RollingWindow,
    assess,
    next_state,
)
from .dialect import insert
from .events import record_act, record_many
from .scope import Tx
from .tables import (
    grants_table,
    outbound_table,
    reputation_table,
    send_clocks_table,
    utcnow,
    workspaces_table,
)
from .workspaces import policy_of

__all__ = [
    "KINDS",
    "levels_from",
    "levels_of",
    "paused_subjects",
    "record_outcomes",
    "record_sends",
    "reinstate",
]

KINDS = ("grant", "workspace", "domain", "application")
"""The levels reputation is kept at, from the narrowest."""

_rep = reputation_table
_grants = grants_table
_out = outbound_table
_workspaces = workspaces_table
_PLATFORM = Policy()
_STATUS_OF = {
    ReputationState.HEALTHY: GrantStatus.ACTIVE,
    ReputationState.UNDER_REVIEW: GrantStatus.UNDER_REVIEW,
    ReputationState.PAUSED: GrantStatus.PAUSED,
}
_FOLLOWS_REPUTATION = {GrantStatus.ACTIVE, GrantStatus.UNDER_REVIEW}


@dataclass(frozen=True, slots=True)
class _Owner:
    """What a grant's sends are counted under, and the policy that judges them."""

    grant_id: str
    workspace_id: str
    domain: str
    policy: Policy

    def subjects(self, application_id: str) -> tuple[tuple[str, str], ...]:
        return (
            ("grant", self.grant_id),
            ("workspace", self.workspace_id),
            ("domain", self.domain),
            ("application", application_id),
        )


@dataclass(slots=True)
class _Changes:
    """What one transaction does to one subject's window."""

    policy: Policy
    sends: list[tuple[int, str]] = field(default_factory=list)  # (outbound id, recipient)
    bounces: list[int] = field(default_factory=list)  # sequence numbers
    complaints: list[int] = field(default_factory=list)
    seqs: dict[tuple[int, str], int] = field(default_factory=dict)


def record_sends(tx: Tx, sends: Sequence[tuple[int, str, str]]) -> None:
    """Count each ``(outbound id, grant id, recipient)`` as a send at every level, and keep
    its sequence numbers on the outbound row."""
    if not sends:
        return
    owners = _owners(tx, {grant for _, grant, _ in sends})
    changes: dict[tuple[str, str], _Changes] = {}
    for outbound_id, grant_id, recipient in sends:
        owner = owners.get(grant_id)
        if owner is None:
            continue  # deleted meanwhile
        for subject in owner.subjects(tx.application_id):
            _changes(changes, subject, owner).sends.append((outbound_id, recipient))
    _apply(tx, changes)
    numbered: dict[int, dict[str, list[int]]] = {}
    for outbound_id, grant_id, recipient in sends:
        owner = owners.get(grant_id)
        if owner is None:
            continue
        numbered.setdefault(outbound_id, {})[recipient] = [
            changes[subject].seqs[(outbound_id, recipient)]
            for subject in owner.subjects(tx.application_id)
        ]
    if not numbered:
        return
    current = dict(
        tx.conn.execute(
            sa.select(_out.c.id, _out.c.reputation).where(
                _out.c.application_id == tx.application_id, _out.c.id.in_(sorted(numbered))
            )
        ).all()
    )
    tx.conn.execute(
        sa.update(_out)
        .where(_out.c.application_id == tx.application_id, _out.c.id == sa.bindparam("oid"))
        .values(reputation=sa.bindparam("seqs", type_=_out.c.reputation.type)),
        [
            {"oid": oid, "seqs": {**(current.get(oid) or {}), **seqs}}
            for oid, seqs in numbered.items()
        ],
    )


def record_outcomes(tx: Tx, outcomes: Sequence[tuple[int, str, str, str]]) -> None:
    """Count each ``(outbound id, grant id, recipient, "bounce" | "complaint")`` (a hard
    bounce or a complaint) at every level, for the send it belongs to."""
    if not outcomes:
        return
    seqs = dict(
        tx.conn.execute(
            sa.select(_out.c.id, _out.c.reputation).where(
                _out.c.application_id == tx.application_id,
                _out.c.id.in_(sorted({oid for oid, _, _, _ in outcomes})),
            )
        ).all()
    )
    owners = _owners(tx, {grant for _, grant, _, _ in outcomes})
    changes: dict[tuple[str, str], _Changes] = {}
    for outbound_id, grant_id, recipient, kind in outcomes:
        owner = owners.get(grant_id)
        numbers = (seqs.get(outbound_id) or {}).get(recipient)
        if owner is None or not numbers:
            continue  # a send not counted (sent before reputation was kept)
        for subject, seq in zip(owner.subjects(tx.application_id), numbers, strict=True):
            found = _changes(changes, subject, owner)
            (found.bounces if kind == "bounce" else found.complaints).append(seq)
    _apply(tx, changes)


def paused_subjects(
    tx: Tx, workspace_ids: Iterable[str], domains: Iterable[str]
) -> set[tuple[str, str]]:
    """Which of these workspaces and domains, and the application, are paused as a whole."""
    wanted = [("workspace", w) for w in set(workspace_ids)] + [("domain", d) for d in set(domains)]
    wanted.append(("application", tx.application_id))
    rows = tx.conn.execute(
        sa.select(_rep.c.kind, _rep.c.subject).where(
            _rep.c.application_id == tx.application_id,
            _rep.c.state == ReputationState.PAUSED.value,
            sa.tuple_(_rep.c.kind, _rep.c.subject).in_(wanted),
        )
    )
    return {(row.kind, row.subject) for row in rows}


def levels_of(tx: Tx, grant_id: str) -> list[ReputationLevel]:
    """The grant's reputation at each level, from the grant to the application."""
    owner = _owners(tx, {grant_id})[grant_id]
    breaker = tx.conn.execute(
        sa.select(send_clocks_table.c.breaker).where(
            send_clocks_table.c.application_id == tx.application_id,
            send_clocks_table.c.kind == "grant",
            send_clocks_table.c.subject == grant_id,
        )
    ).scalar()
    return _levels(tx, owner.subjects(tx.application_id), owner.policy, breaker or "closed")


def levels_from(tx: Tx, kind: str, subject: str) -> list[ReputationLevel]:
    """The reputation of a grant, workspace, domain or the application (``subject``: its
    stored key, a domain's name) at its own level and each wider one, to the application."""
    if kind == "grant":
        return levels_of(tx, subject)
    if kind not in KINDS:
        raise ValueError(f"no reputation is kept for {kind!r}")
    subjects = [(kind, subject)] if kind != "application" else []
    subjects.append(("application", tx.application_id))
    policy = _PLATFORM
    if kind == "workspace":
        row = tx.conn.execute(
            sa.select(_workspaces.c.policy_version, _workspaces.c.policy).where(
                _workspaces.c.application_id == tx.application_id, _workspaces.c.id == subject
            )
        ).one()
        policy = policy_of(subject, row.policy_version, row.policy)
    return _levels(tx, tuple(subjects), policy, "closed")


def _levels(
    tx: Tx, subjects: Sequence[tuple[str, str]], policy: Policy, breaker: str
) -> list[ReputationLevel]:
    """Each subject's window, state and why (grants and workspaces judged by ``policy``,
    domains and the application by the platform's); ``breaker`` is the grant's."""
    rows = {
        (row.kind, row.subject): row
        for row in tx.conn.execute(
            sa.select(_rep).where(
                _rep.c.application_id == tx.application_id,
                sa.tuple_(_rep.c.kind, _rep.c.subject).in_(list(subjects)),
            )
        )
    }
    levels = []
    for kind, subject in subjects:
        judging = policy if kind in ("grant", "workspace") else _PLATFORM
        row = rows.get((kind, subject))
        window = (
            RollingWindow.from_json(row.window) if row else RollingWindow(judging.reputation_window)
        )
        judged = _assess(window, judging)
        levels.append(
            ReputationLevel(
                kind=kind,
                subject=subject,
                state=ReputationState(row.state) if row else ReputationState.HEALTHY,
                sample=window.sample,
                bounces=window.bounces,
                complaints=window.complaints,
                bounce_rate=window.bounce_rate,
                complaint_rate=window.complaint_rate,
                reason=(row.reason if row and row.reason else judged.reason),
                breaker=breaker if kind == "grant" else "closed",
            )
        )
    return levels


def reinstate(tx: Tx, kind: str, subject: str, *, reason: str, by: str) -> None:
    """Lift ``subject``'s pause (or review): its window restarts empty, its state is
    healthy, and ``<kind>.reinstated`` records who and why (a grant is active again)."""
    row = tx.conn.execute(
        sa.select(_rep)
        .where(
            _rep.c.application_id == tx.application_id,
            _rep.c.kind == kind,
            _rep.c.subject == subject,
        )
        .with_for_update()
    ).first()
    before = ReputationState(row.state) if row else ReputationState.HEALTHY
    if row is not None:
        window = RollingWindow.from_json(row.window)
        window.restart()
        tx.conn.execute(
            sa.update(_rep)
            .where(
                _rep.c.application_id == tx.application_id,
                _rep.c.kind == kind,
                _rep.c.subject == subject,
            )
            .values(
                window=window.to_json(),
                state=ReputationState.HEALTHY.value,
                reason=f"reinstated by {by}: {reason}",
                updated_at=utcnow(),
            )
        )
    record_act(tx, kind, subject, "reinstated", reason=reason, by=by, **{"from": before.value})


# -- applying changes -------------------------------------------------------------------


def _changes(
    changes: dict[tuple[str, str], _Changes], subject: tuple[str, str], owner: _Owner
) -> _Changes:
    found = changes.get(subject)
    if found is None:
        kind = subject[0]
        policy = owner.policy if kind in ("grant", "workspace") else _PLATFORM
        found = changes[subject] = _Changes(policy)
    return found


def _apply(tx: Tx, changes: dict[tuple[str, str], _Changes]) -> None:
    """Change each subject's window and state, its row locked, in one order for all."""
    if not changes:
        return
    subjects = sorted(changes)
    now = utcnow()
    tx.conn.execute(
        insert(tx.conn, _rep).on_conflict_do_nothing(),
        [
            {
                "application_id": tx.application_id,
                "kind": kind,
                "subject": subject,
                "window": RollingWindow(
                    changes[(kind, subject)].policy.reputation_window
                ).to_json(),
                "state": ReputationState.HEALTHY.value,
                "reason": None,
                "updated_at": now,
            }
            for kind, subject in subjects
        ],
    )
    rows = {
        (row.kind, row.subject): row
        for row in tx.conn.execute(
            sa.select(_rep)
            .where(
                _rep.c.application_id == tx.application_id,
                sa.tuple_(_rep.c.kind, _rep.c.subject).in_(subjects),
            )
            .order_by(_rep.c.kind, _rep.c.subject)
            .with_for_update()
        )
    }
    updates: list[dict[str, Any]] = []
    moved: list[tuple[str, str, ReputationState, ReputationState, Assessment]] = []
    for subject in subjects:
        change, row = changes[subject], rows[subject]
        window = RollingWindow.from_json(row.window)
        if window.size != change.policy.reputation_window:
            window = window.resized(change.policy.reputation_window)
        for key in change.sends:
            change.seqs[key] = window.send()
        for seq in change.bounces:
            window.bounce(seq)
        for seq in change.complaints:
            window.complaint(seq)
        judged = _assess(window, change.policy)
        before = ReputationState(row.state)
        after = next_state(before, judged)
        updates.append(
            {
                "k": subject[0],
                "s": subject[1],
                "w": window.to_json(),
                "st": after.value,
                "r": judged.reason if after is judged.state else row.reason,
                "t": now,
            }
        )
        if after is not before:
            moved.append((subject[0], subject[1], before, after, judged))
    tx.conn.execute(
        sa.update(_rep)
        .where(
            _rep.c.application_id == tx.application_id,
            _rep.c.kind == sa.bindparam("k"),
            _rep.c.subject == sa.bindparam("s"),
        )
        .values(
            window=sa.bindparam("w", type_=_rep.c.window.type),
            state=sa.bindparam("st"),
            reason=sa.bindparam("r"),
            updated_at=sa.bindparam("t"),
        ),
        updates,
    )
    for kind, name, before, after, judged in moved:
        _moved(tx, kind, name, before, after, judged)


def _moved(
    tx: Tx,
    kind: str,
    subject: str,
    before: ReputationState,
    after: ReputationState,
    judged: Assessment,
) -> None:
    """The event of a state change; an active or under-review grant's status follows."""
    figures = {
        "reason": judged.reason,
        "bounce_rate": judged.bounce_rate,
        "complaint_rate": judged.complaint_rate,
        "sample": judged.sample,
    }
    if kind != "grant":
        payload = {"kind": kind, "subject": subject, "from": before.value, "to": after.value}
        record_many(tx, f"{kind}.status_changed", [(None, {**payload, **figures})])
        return
    status = tx.conn.execute(
        sa.select(_grants.c.status).where(
            _grants.c.application_id == tx.application_id, _grants.c.id == subject
        )
    ).scalar()
    if status is None or GrantStatus(status) not in _FOLLOWS_REPUTATION:
        return  # paused, restricted or deleted: only a reinstatement or an operator moves it
    wanted = _STATUS_OF[after]
    if GrantStatus(status) is wanted:
        return
    tx.conn.execute(
        sa.update(_grants)
        .where(_grants.c.application_id == tx.application_id, _grants.c.id == subject)
        .values(status=wanted.value, updated_at=utcnow())
    )
    payload = {"grant_id": subject, "from": status, "to": wanted.value}
    record_many(tx, "grant.status_changed", [(subject, {**payload, **figures})])


def _assess(window: RollingWindow, policy: Policy) -> Assessment:
    return assess(window, policy.thresholds, min_sample=policy.reputation_min_sample)


def _owners(tx: Tx, grant_ids: Iterable[str]) -> dict[str, _Owner]:
    wanted = sorted(set(grant_ids))
    if not wanted:
        return {}
    rows = tx.conn.execute(
        sa.select(
            _grants.c.id,
            _grants.c.address,
            _grants.c.workspace_id,
            _workspaces.c.policy_version,
            _workspaces.c.policy,
        )
        .join(_workspaces, _workspaces.c.id == _grants.c.workspace_id)
        .where(_grants.c.application_id == tx.application_id, _grants.c.id.in_(wanted))
    )
    return {
        row.id: _Owner(
            row.id,
            row.workspace_id,
            row.address.rsplit("@", 1)[1],
            policy_of(row.workspace_id, row.policy_version, row.policy),
        )
        for row in rows
    }
