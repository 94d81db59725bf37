"""Pacing kept in the store: each grant's clock (rate, burst, daily quota, ramp) and each
domain's ramp, changed in the transaction that queues the messages.

The clocks of a batch are locked in one order (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite has one writer), so several workers sending for the same
grant share its quota and rate exactly: none is exceeded, whatever the
number of processes. The distinct recipients of a warming grant or domain
are kept in ``ramp_recipients`` while its ramp lasts, one row each, so a
recipient counts once however often it is mailed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import sqlalchemy as sa

from ..model.pacing import Admission, PacingLimits, SendClock, admit, admit_recipients
from ..model.policy import Policy
from .dialect import insert
from .scope import Tx
from .tables import ramp_recipients_table, send_clocks_table, utcnow, workspaces_table
from .workspaces import policy_of

__all__ = ["PacingRequest", "admit_sends", "clock_rows", "policies"]

_clocks = send_clocks_table
_ramp = ramp_recipients_table
_workspaces = workspaces_table


@dataclass(frozen=True, slots=True)
class PacingRequest:
    """One message asking to leave: its grant, domain, policy and recipients."""

    grant_id: str
    domain: str
    policy: Policy
    recipients: tuple[str, ...]
    defer: bool = False
    dry_run: bool = False
    """Only say what the answer would be, changing nothing (a later gate refuses it)."""


def policies(tx: Tx, workspace_ids: Iterable[str]) -> dict[str, Policy]:
    """The policies of these workspaces (one query, parsed once per version)."""
    wanted = sorted(set(workspace_ids))
    if not wanted:
        return {}
    rows = tx.conn.execute(
        sa.select(_workspaces.c.id, _workspaces.c.policy_version, _workspaces.c.policy).where(
            _workspaces.c.application_id == tx.application_id, _workspaces.c.id.in_(wanted)
        )
    )
    return {row.id: policy_of(row.id, row.policy_version, row.policy) for row in rows}


def clock_rows(
    tx: Tx, subjects: Iterable[tuple[str, str]], *, lock: bool = False
) -> dict[tuple[str, str], Any]:
    """The clock rows of these ``(kind, subject)`` pairs that exist (``lock``: created
    when missing and locked, in one order)."""
    wanted = sorted(set(subjects))
    if not wanted:
        return {}
    if lock:
        now = utcnow()
        tx.conn.execute(
            insert(tx.conn, _clocks).on_conflict_do_nothing(),
            [
                {
                    "application_id": tx.application_id,
                    "kind": kind,
                    "subject": subject,
                    "clock": SendClock().to_json(),
                    "breaker": "closed",
                    "next_release": 0.0,
                    "updated_at": now,
                }
                for kind, subject in wanted
            ],
        )
    query = (
        sa.select(_clocks)
        .where(
            _clocks.c.application_id == tx.application_id,
            sa.tuple_(_clocks.c.kind, _clocks.c.subject).in_(wanted),
        )
        .order_by(_clocks.c.kind, _clocks.c.subject)
    )
    if lock:
        query = query.with_for_update()
    return {(row.kind, row.subject): row for row in tx.conn.execute(query)}


def admit_sends(
    tx: Tx, requests: Sequence[PacingRequest], *, now: float
) -> tuple[list[Admission], dict[str, str]]:
    """Each request's admission, in order, its grant's and domain's clocks moved on; and
    the state of each grant's breaker (``closed``, ``slow``, ``held``)."""
    if not requests:
        return [], {}
    subjects = {("grant", r.grant_id) for r in requests} | {("domain", r.domain) for r in requests}
    rows = clock_rows(tx, subjects, lock=True)
    clocks = {key: SendClock.from_json(row.clock) for key, row in rows.items()}
    new = _new_recipients(tx, requests, clocks, now)
    answers: list[Admission] = []
    seen: set[tuple[str, str, str]] = set()
    added: list[tuple[str, str, str]] = []
    for request in requests:
        grant_key, domain_key = ("grant", request.grant_id), ("domain", request.domain)
        grant_clock, domain_clock = clocks[grant_key], clocks[domain_key]
        if request.dry_run:
            grant_clock, domain_clock = _copy(grant_clock), _copy(domain_clock)
        fresh = {
            key: [a for a in request.recipients if (*key, a) in new and (*key, a) not in seen]
            for key in (grant_key, domain_key)
        }
        answer = _admit(request, grant_clock, domain_clock, fresh, now)
        answers.append(answer)
        if answer.admitted and not request.dry_run:
            for key, addresses in fresh.items():
                for address in addresses:
                    seen.add((*key, address))
                    added.append((*key, address))
    tx.conn.execute(
        sa.update(_clocks)
        .where(
            _clocks.c.application_id == tx.application_id,
            _clocks.c.kind == sa.bindparam("k"),
            _clocks.c.subject == sa.bindparam("s"),
        )
        .values(clock=sa.bindparam("c", type_=_clocks.c.clock.type), updated_at=utcnow()),
        [{"k": k, "s": s, "c": clock.to_json()} for (k, s), clock in clocks.items()],
    )
    if added:
        tx.conn.execute(
            insert(tx.conn, _ramp).on_conflict_do_nothing(),
            [
                {"application_id": tx.application_id, "kind": k, "subject": s, "address": a}
                for k, s, a in added
            ],
        )
    breakers = {subject: row.breaker for (kind, subject), row in rows.items() if kind == "grant"}
    return answers, breakers


def _admit(
    request: PacingRequest,
    grant_clock: SendClock,
    domain_clock: SendClock,
    fresh: dict[tuple[str, str], list[str]],
    now: float,
) -> Admission:
    """The grant's ramp, the domain's ramp, then the grant's quota and rate: the latest
    time any of them allows; nothing changes unless all admit."""
    ramps = request.policy.warmup
    trial_grant, trial_domain = _copy(grant_clock), _copy(domain_clock)
    answers = [
        admit_recipients(
            trial_grant,
            ramps.grant,
            now,
            len(fresh[("grant", request.grant_id)]),
            defer=request.defer,
            who="grant",
        ),
        admit_recipients(
            trial_domain,
            ramps.domain,
            now,
            len(fresh[("domain", request.domain)]),
            defer=request.defer,
            who=f"domain ({request.domain})",
        ),
    ]
    refused = next((a for a in answers if not a.admitted), None)
    if refused is not None:
        return refused
    paced = admit(trial_grant, PacingLimits.of(request.policy), now, defer=request.defer)
    if not paced.admitted:
        return paced
    answers.append(paced)
    latest = max(answers, key=lambda a: a.send_at or 0.0)
    _assign(grant_clock, trial_grant)
    _assign(domain_clock, trial_domain)
    return latest


def _new_recipients(
    tx: Tx,
    requests: Sequence[PacingRequest],
    clocks: dict[tuple[str, str], SendClock],
    now: float,
) -> set[tuple[str, str, str]]:
    """The ``(kind, subject, address)`` of the batch not mailed before by a grant or domain
    still on its ramp (a sender past its ramp counts nobody)."""
    wanted: set[tuple[str, str, str]] = set()
    for request in requests:
        ramps = request.policy.warmup
        ramped = (
            (("grant", request.grant_id), ramps.grant),
            (("domain", request.domain), ramps.domain),
        )
        for key, ramp in ramped:
            since = clocks[key].warm_since
            if ramp and (since is None or now - since < ramp[-1].within):
                wanted.update((*key, address) for address in request.recipients)
    if not wanted:
        return set()
    known = tx.conn.execute(
        sa.select(_ramp.c.kind, _ramp.c.subject, _ramp.c.address).where(
            _ramp.c.application_id == tx.application_id,
            sa.tuple_(_ramp.c.kind, _ramp.c.subject, _ramp.c.address).in_(sorted(wanted)),
        )
    )
    return wanted - {(row.kind, row.subject, row.address) for row in known}


def _copy(clock: SendClock) -> SendClock:
    return replace(clock, reserved=dict(clock.reserved))


def _assign(target: SendClock, source: SendClock) -> None:
    for name in fields(SendClock):
        setattr(target, name.name, getattr(source, name.name))
