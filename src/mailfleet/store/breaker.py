"""The circuit breaker at release time: which claimed messages may leave now.

The sender claims due messages, then, in the same transaction,
:func:`hold_back` decides for each grant of the claim (see
:mod:`mailfleet.model.breaker`):

- a grant paused or restricted since its messages were queued (or whose
  workspace, domain or application is) sends nothing: its messages wait;
- otherwise its breaker is judged on its own window and its domain's: closed,
  every message may leave; slow, one per ``slowdown`` sustained intervals;
  held, one probe per ``probe_interval``;
- and never more than may leave while every message of the grant in flight
  (claimed and not yet recorded) could still bounce without pausing it.

Messages held back are given back unleased, due when their grant may next
send; a change of breaker state is a ``grant.breaker_changed`` event and a
log line. Only grants whose breaker is not closed, or whose window holds a bounce
or complaint (on PostgreSQL, where senders claim side by side), take a lock on
their clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..model.breaker import BreakerState, BreakerVerdict, judge, releasable
from ..model.policy import Policy
from ..model.records import GrantStatus
from ..model.reputation import RollingWindow
from .events import record_many
from .outbound import OutboundItem
from .pacing import clock_rows
from .reputation import paused_subjects
from .restrictions import restricted_subjects
from .scope import Tx
from .tables import (
    grants_table,
    outbound_table,
    reputation_table,
    send_clocks_table,
    workspaces_table,
)
from .workspaces import policy_of

__all__ = ["BLOCKED_RECHECK", "GUARD_RECHECK", "hold_back"]

log = logging.getLogger("mailfleet.breaker")

BLOCKED_RECHECK = 60.0
"""Seconds before the queued mail of a paused or restricted grant is looked at again."""

GUARD_RECHECK = 0.5
"""Seconds before messages the in-flight guard kept back are looked at again: by then
the outcomes of those in flight are usually recorded."""

_PLATFORM = Policy()
_grants, _workspaces, _out, _rep, _clocks = (
    grants_table,
    workspaces_table,
    outbound_table,
    reputation_table,
    send_clocks_table,
)


@dataclass(frozen=True, slots=True)
class _Sender:
    grant_id: str
    status: GrantStatus
    workspace_id: str
    domain: str
    policy: Policy


def hold_back(tx: Tx, items: Sequence[OutboundItem], *, now: float) -> list[OutboundItem]:
    """The claimed ``items`` that may leave now; the others are given back, due later."""
    if not items:
        return []
    by_grant: dict[str, list[OutboundItem]] = {}
    for item in items:
        by_grant.setdefault(item.grant_id, []).append(item)
    senders = _senders(tx, by_grant)
    blocked = _blocked(tx, senders)
    stored = _open_breakers(tx, by_grant)
    windows = _windows(tx, senders)
    in_flight = _in_flight(tx, by_grant, {item.id for item in items})
    if tx.conn.dialect.name != "sqlite":
        # On PostgreSQL each statement sees what committed before it, and outcomes are
        # recorded meanwhile: a message recorded between a read of the windows and one
        # of the messages in flight would be counted by neither. So the windows are
        # read again after the messages in flight (one recorded between is counted
        # twice, never missed), and the grants with a bounce or complaint are judged
        # under their clock's lock, as several workers' senders claim side by side.
        guarded = _guarded(windows, senders, blocked) | stored
        if guarded:
            clock_rows(tx, (("grant", g) for g in guarded), lock=True)
            in_flight = _in_flight(tx, by_grant, {item.id for item in items})
        windows = _windows(tx, senders)
    released: list[OutboundItem] = []
    later: list[tuple[int, float]] = []
    judged: dict[str, tuple[BreakerVerdict, int]] = {}
    for grant_id, claimed in by_grant.items():
        sender = senders.get(grant_id)
        if sender is None or grant_id in blocked:
            later.extend((item.id, now + BLOCKED_RECHECK) for item in claimed)
            continue
        sends = sum(len(item.recipients) for item in claimed)
        verdict, allowed = _judge(sender, windows, in_flight.get(grant_id, 0), sends)
        allowed = _messages_within(claimed, allowed)
        if verdict.state is BreakerState.CLOSED and grant_id not in stored:
            released.extend(claimed[:allowed])
            wait = now + min(sender.policy.breaker.probe_interval, GUARD_RECHECK)
            later.extend((item.id, wait) for item in claimed[allowed:])
            continue
        judged[grant_id] = (verdict, allowed)
    if judged:
        rows = clock_rows(tx, (("grant", g) for g in judged), lock=True)
        changes: list[dict[str, Any]] = []
        for grant_id, (verdict, allowed) in judged.items():
            sender, claimed, row = senders[grant_id], by_grant[grant_id], rows[("grant", grant_id)]
            due = row.next_release
            take = 0
            if verdict.state is BreakerState.CLOSED:
                take, due = allowed, 0.0
            elif allowed and due <= now:  # one slowed message, or one probe
                take, due = 1, now + _spacing(sender.policy, verdict.state)
            released.extend(claimed[:take])
            wait = due if due > now else now + sender.policy.breaker.probe_interval
            later.extend((item.id, wait) for item in claimed[take:])
            changes.append({"k": "grant", "s": grant_id, "b": verdict.state.value, "n": due})
            if verdict.state.value != row.breaker:
                _changed(tx, grant_id, row.breaker, verdict)
        tx.conn.execute(
            sa.update(_clocks)
            .where(
                _clocks.c.application_id == tx.application_id,
                _clocks.c.kind == sa.bindparam("k"),
                _clocks.c.subject == sa.bindparam("s"),
            )
            .values(breaker=sa.bindparam("b"), next_release=sa.bindparam("n")),
            changes,
        )
    if later:
        tx.conn.execute(
            sa.update(_out)
            .where(_out.c.application_id == tx.application_id, _out.c.id == sa.bindparam("oid"))
            .values(not_before=sa.bindparam("due"), lease_owner=None, lease_until=None),
            [{"oid": oid, "due": due} for oid, due in later],
        )
    return sorted(released, key=lambda item: item.id)


def _judge(
    sender: _Sender,
    windows: dict[tuple[str, str], RollingWindow],
    in_flight: int,
    wanted: int,
) -> tuple[BreakerVerdict, int]:
    """The grant's breaker (the worse of its own and its domain's) and how many of its
    ``wanted`` sends (recipients) the in-flight guard lets leave."""
    policy = sender.policy
    if not policy.breaker.enabled:
        return BreakerVerdict(BreakerState.CLOSED, 0.0, "breaker disabled"), wanted
    minimum = policy.reputation_min_sample
    grant_window = windows.get(("grant", sender.grant_id))
    domain_window = windows.get(("domain", sender.domain))
    verdicts = []
    allowed = wanted
    if grant_window is not None:
        verdicts.append(judge(grant_window, policy.thresholds, policy.breaker, min_sample=minimum))
        allowed = releasable(
            grant_window,
            policy.thresholds,
            min_sample=minimum,
            in_flight=in_flight,
            wanted=wanted,
        )
    if domain_window is not None:
        verdicts.append(
            judge(
                domain_window,
                _PLATFORM.thresholds,
                policy.breaker,
                min_sample=_PLATFORM.reputation_min_sample,
            )
        )
    order = list(BreakerState)
    worst = max(verdicts, key=lambda v: order.index(v.state), default=None)
    if worst is None:
        worst = BreakerVerdict(BreakerState.CLOSED, 0.0, "no sends counted yet")
    return worst, allowed


def _messages_within(claimed: Sequence[OutboundItem], sends: int) -> int:
    """How many of the first messages of ``claimed`` hold at most ``sends`` recipients."""
    taken = 0
    for count, item in enumerate(claimed):
        taken += len(item.recipients)
        if taken > sends:
            return count
    return len(claimed)


def _spacing(policy: Policy, state: BreakerState) -> float:
    if state is BreakerState.SLOW:
        return 60.0 / policy.send_rate_per_minute * policy.breaker.slowdown
    return policy.breaker.probe_interval


def _changed(tx: Tx, grant_id: str, before: str, verdict: BreakerVerdict) -> None:
    payload = {
        "grant_id": grant_id,
        "from": before,
        "to": verdict.state.value,
        "risk": round(verdict.risk, 4),
        "reason": verdict.reason,
    }
    record_many(tx, "grant.breaker_changed", [(grant_id, payload)])
    level = logging.INFO if verdict.state is BreakerState.CLOSED else logging.WARNING
    log.log(
        level,
        "breaker of grant %s %s -> %s: %s",
        grant_id,
        before,
        verdict.state.value,
        verdict.reason,
        extra={"grant_id": grant_id, "breaker": verdict.state.value},
    )


def _senders(tx: Tx, by_grant: dict[str, list[OutboundItem]]) -> dict[str, _Sender]:
    rows = tx.conn.execute(
        sa.select(
            _grants.c.id,
            _grants.c.status,
            _grants.c.address,
            _grants.c.workspace_id,
            _workspaces.c.policy_version,
            _workspaces.c.policy,
        )
        .join(_workspaces, _workspaces.c.id == _grants.c.workspace_id)
        .where(_grants.c.application_id == tx.application_id, _grants.c.id.in_(sorted(by_grant)))
    )
    return {
        row.id: _Sender(
            row.id,
            GrantStatus(row.status),
            row.workspace_id,
            row.address.rsplit("@", 1)[1],
            policy_of(row.workspace_id, row.policy_version, row.policy),
        )
        for row in rows
    }


def _blocked(tx: Tx, senders: dict[str, _Sender]) -> set[str]:
    """Grants that may not send now: paused or restricted, themselves or as a whole."""
    stopped = {GrantStatus.PAUSED, GrantStatus.RESTRICTED}
    blocked = {g for g, s in senders.items() if s.status in stopped}
    workspaces = {s.workspace_id for s in senders.values()}
    domains = {s.domain for s in senders.values()}
    wide = paused_subjects(tx, workspaces, domains) | set(
        restricted_subjects(tx, workspaces, domains)
    )
    if wide:
        for grant_id, s in senders.items():
            levels = {("workspace", s.workspace_id), ("domain", s.domain)}
            if levels & wide or ("application", tx.application_id) in wide:
                blocked.add(grant_id)
    return blocked


def _guarded(
    windows: dict[tuple[str, str], RollingWindow], senders: dict[str, _Sender], blocked: set[str]
) -> set[str]:
    """Grants whose in-flight guard matters: their window holds a bounce or complaint."""
    return {
        grant_id
        for grant_id in senders
        if grant_id not in blocked
        and (window := windows.get(("grant", grant_id))) is not None
        and (window.bounces or window.complaints)
    }


def _windows(tx: Tx, senders: dict[str, _Sender]) -> dict[tuple[str, str], RollingWindow]:
    wanted = [("grant", g) for g in senders] + [("domain", s.domain) for s in senders.values()]
    rows = tx.conn.execute(
        sa.select(_rep.c.kind, _rep.c.subject, _rep.c.window).where(
            _rep.c.application_id == tx.application_id,
            sa.tuple_(_rep.c.kind, _rep.c.subject).in_(sorted(set(wanted))),
        )
    )
    return {(row.kind, row.subject): RollingWindow.from_json(row.window) for row in rows}


def _in_flight(
    tx: Tx, by_grant: dict[str, list[OutboundItem]], claimed: set[int]
) -> dict[str, int]:
    """Messages of these grants claimed before this claim and not yet recorded, per grant
    (their outcome is still to come), counted by recipient."""
    rows = tx.conn.execute(
        sa.select(_out.c.grant_id, _out.c.id, _out.c.recipients).where(
            _out.c.application_id == tx.application_id,
            _out.c.status == "pending",
            _out.c.grant_id.in_(sorted(by_grant)),
            _out.c.lease_until.is_not(None),
        )
    )
    counts: dict[str, int] = {}
    for row in rows:
        if row.id not in claimed:
            counts[row.grant_id] = counts.get(row.grant_id, 0) + len(row.recipients)
    return counts


def _open_breakers(tx: Tx, by_grant: dict[str, list[OutboundItem]]) -> set[str]:
    """Grants of the claim whose breaker is not closed (slow or held)."""
    rows = tx.conn.execute(
        sa.select(_clocks.c.subject).where(
            _clocks.c.application_id == tx.application_id,
            _clocks.c.kind == "grant",
            _clocks.c.breaker != BreakerState.CLOSED.value,
            _clocks.c.subject.in_(sorted(by_grant)),
        )
    )
    return set(rows.scalars())
